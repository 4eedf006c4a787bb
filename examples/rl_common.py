"""What the Stable-Baselines3 examples share: the LLM endpoint, the environment, the training
loop and the learning curve (reward per episode), printed and saved as a plot.

The endpoint is the stub server started in this process (``--stub``: deterministic answers,
for tests), the local SmolLM2 server (``--local-model``) or any OpenAI-compatible endpoint
(``--base-url``, ``--model``). Users are stepped at once by ``SB3VecEnv`` (threads here);
``VecMonitor`` records each episode's reward and length. Every LLM call lands in the SQLite
database under ``--work-dir``: a rerun is answered from the cache.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from examples.interrupted import interrupted_line
from lusifer.core.config import LLMConfig, StructuredOutput
from lusifer.core.errors import LusiferError
from lusifer.core.settings import get_settings
from lusifer.data import Dataset, load_movielens_100k
from lusifer.env import EnvConfig, LocalExecutor, SimulatedUserVectorEnv
from lusifer.env.sb3_vec import SB3VecEnv
from lusifer.llm import OpenAICompatibleModel
from lusifer.store.engines import create_tables, get_engine
from lusifer.stub import StubConfig, StubServer

console = Console()

MakeAgent = Callable[[VecEnv, argparse.Namespace], BaseAlgorithm]


@dataclass
class Episode:
    """One finished episode: its user, reward (sum over steps) and length."""

    user_id: int
    reward: float
    length: int


@dataclass
class Training:
    """What a training run recorded."""

    algorithm: str
    episodes: list[Episode] = field(default_factory=list)
    steps: int = 0
    masked_choices: int = 0  # items chosen although the mask forbade them
    repeats: int = 0  # items repeated within a slate
    updates: int = 0  # gradient steps the algorithm took
    seconds: float = 0.0
    plot: Path | None = None

    def block_means(self, size: int) -> list[float]:
        """Mean reward per block of ``size`` episodes."""
        rewards = [e.reward for e in self.episodes]
        return [float(np.mean(rewards[i : i + size])) for i in range(0, len(rewards), size)]


class EpisodeRecorder(BaseCallback):
    """Collects finished episodes (from ``VecMonitor``) and the items chosen against the mask."""

    def __init__(self, training: Training) -> None:
        super().__init__()
        self.training = training

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.training.steps += 1
            if "valid" in info:
                repeated = np.asarray(info["repeated"], dtype=np.bool_)
                self.training.masked_choices += int((~info["valid"] & ~repeated).sum())
                self.training.repeats += int(repeated.sum())
            if "episode" in info:
                ep = info["episode"]
                self.training.episodes.append(
                    Episode(int(info["user_id"]), float(ep["r"]), int(ep["l"]))
                )
        return True


def parse_args(description: str, argv: Sequence[str] | None, **defaults: Any) -> argparse.Namespace:
    """The examples' common command line."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--stub", action="store_true", help="the stub LLM server (for tests)")
    where.add_argument("--local-model", action="store_true", help="start the local SmolLM2")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint")
    p.add_argument("--model", help="model name at the endpoint")
    p.add_argument("--structured-output", default="json_schema", help="json_schema|json_object")
    p.add_argument("--stub-latency", type=float, default=0.0, help="seconds per stub answer")
    p.add_argument("--data-dir", type=Path, help="directory holding ml-100k/ (and tmdb/)")
    p.add_argument("--work-dir", type=Path, default=Path("lusifer-runs/rl"))
    p.add_argument("--plot", type=Path, help="where the learning curve goes (PNG)")
    p.add_argument("--users", type=int, default=4, help="users stepped at once")
    p.add_argument("--steps", type=int, default=400, help="environment steps in all")
    p.add_argument("--slate-size", type=int, default=defaults.get("slate_size", 3))
    p.add_argument("--episode-steps", type=int, default=10, help="steps before truncation")
    p.add_argument("--update-every", type=int, default=5, help="profile update period")
    p.add_argument("--threads", type=int, help="concurrent LLM calls (default: users; 1 local)")
    p.add_argument("--block", type=int, default=5, help="episodes per row of the curve")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _data_dir(given: Path | None) -> Path:
    for candidate in (given, os.environ.get("LUSIFER_DATA_DIR"), get_settings().data_dir):
        if candidate and (Path(candidate) / "ml-100k" / "u.data").is_file():
            return Path(candidate)
    raise SystemExit("no MovieLens data: pass --data-dir DIR (holding ml-100k/ and tmdb/)")


def load_data(given: Path | None) -> Dataset:
    """Fold u1 of MovieLens 100K, with TMDB overviews when present."""
    root = _data_dir(given)
    overviews = root / "tmdb" / "ml-100k_movies_tmdb.csv"
    return load_movielens_100k(
        root / "ml-100k", overviews if overviews.is_file() else None, folds=("u1",)
    )


@contextmanager
def endpoint(args: argparse.Namespace) -> Iterator[tuple[str, str, StructuredOutput]]:
    """The base URL, model name and structured-output mode the arguments ask for."""
    if args.stub:
        with StubServer(StubConfig(latency_s=args.stub_latency)) as stub:
            yield stub.base_url, "stub-model", "json_schema"
    elif args.local_model:
        # Only an example, outside the kernel, may start the services of local mode.
        from coordinator.local import LOCAL_MODEL_NAME, local_model_server

        with local_model_server(args.work_dir) as base_url:
            yield base_url, LOCAL_MODEL_NAME, "json_object"
    else:
        if not args.base_url or not args.model:
            raise SystemExit("pass --stub, --local-model, or --base-url and --model")
        yield args.base_url, args.model, args.structured_output


def _config(args: argparse.Namespace, llm: LLMConfig) -> EnvConfig:
    return EnvConfig(
        llm=llm,
        fold="u1",
        slate_size=args.slate_size,
        max_steps=args.episode_steps,
        update_every=args.update_every,
        profile_history=10,
        profile_batch=10,
        recent_k=5,
        obs_window=10,
        overview_chars=0,
        max_reask=1,
    )


def train(
    args: argparse.Namespace, algorithm: str, make_agent: MakeAgent, *, single_item: bool
) -> Training:
    """Train an agent against simulated users; record every episode."""
    args.work_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_data(args.data_dir)
    training = Training(algorithm)
    started = time.perf_counter()
    with endpoint(args) as (base_url, model_name, output):
        llm = LLMConfig(
            base_url=base_url, model=model_name, structured_output=output, profile_max_tokens=200
        )
        engine = get_engine(f"sqlite:///{(args.work_dir / 'rl.db').resolve()}")
        create_tables(engine)
        threads = args.threads or (1 if args.local_model else args.users)
        executor = LocalExecutor(engine, OpenAICompatibleModel(base_url, None), threads)
        vector = SimulatedUserVectorEnv(
            args.users, dataset, _config(args, llm), engine=engine, executor=executor
        )
        env = VecMonitor(SB3VecEnv(vector, single_item=single_item))
        try:
            env.seed(args.seed)
            agent = make_agent(env, args)
            agent.learn(total_timesteps=args.steps, callback=EpisodeRecorder(training))
            # SB3's own count (PPO, MaskablePPO and DQN keep it); no public accessor exists.
            training.updates = int(getattr(agent, "_n_updates", 0))
        finally:
            env.close()
    training.seconds = time.perf_counter() - started
    return training


def report(training: Training, args: argparse.Namespace) -> None:
    """Print the learning curve and save its plot."""
    table = Table(title=f"{training.algorithm}: reward per episode, {args.users} users at once")
    table.add_column("episodes", justify="right")
    table.add_column("mean reward", justify="right")
    table.add_column("", justify="left")
    means = training.block_means(args.block)
    low = min(means, default=0.0)
    high = max(means, default=1.0)
    for row, mean in enumerate(means):
        first = row * args.block + 1
        last = min(len(training.episodes), first + args.block - 1)
        width = 0 if high == low else round((mean - low) / (high - low) * 24)
        table.add_row(f"{first}-{last}", f"{mean:.2f}", "█" * max(1, width))
    console.print(table)
    for n, ep in enumerate(training.episodes, start=1):
        console.print(f"episode {n}: user {ep.user_id}, {ep.length} steps, reward {ep.reward:.2f}")
    rewards = [e.reward for e in training.episodes]
    first = float(np.mean(rewards[: args.block])) if rewards else float("nan")
    last = float(np.mean(rewards[-args.block :])) if rewards else float("nan")
    console.print(
        f"{training.algorithm}: {training.steps} steps, {len(training.episodes)} episodes, "
        f"mean reward first {args.block} episodes {first:.2f}, last {args.block} {last:.2f}; "
        f"{training.masked_choices} masked items chosen, {training.repeats} repeats; "
        f"{training.updates} gradient steps, {training.seconds:.0f} s"
    )
    training.plot = args.plot or args.work_dir / f"{training.algorithm.lower()}-curve.png"
    save_plot(training, training.plot, args.block)
    console.print(f"learning curve saved to {training.plot}")


def save_plot(training: Training, path: Path, block: int) -> None:
    """Reward per episode and its running mean over ``block`` episodes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards = np.array([e.reward for e in training.episodes], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    episodes = np.arange(1, len(rewards) + 1)
    ax.plot(episodes, rewards, ".", alpha=0.5, label="episode")
    if len(rewards) >= block:
        running = np.convolve(rewards, np.ones(block) / block, mode="valid")
        ax.plot(episodes[block - 1 :], running, "-", label=f"mean of {block}")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward (sum over the episode)")
    ax.set_title(f"{training.algorithm} against LLM-simulated users")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run(
    argv: Sequence[str] | None,
    description: str,
    algorithm: str,
    make_agent: MakeAgent,
    *,
    single_item: bool = False,
    **defaults: Any,
) -> tuple[int, Training | None]:
    """Parse, train, report; a bad input or a failing service is one line and exit code 1."""
    args = parse_args(description, argv, **defaults)
    try:
        training = train(args, algorithm, make_agent, single_item=single_item)
    except LusiferError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 1, None
    except KeyboardInterrupt:
        console.print(interrupted_line(args.work_dir), highlight=False)
        return 130, None
    report(training, args)
    return 0, training
