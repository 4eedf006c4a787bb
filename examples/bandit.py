"""Train a LinUCB recommender against LLM-simulated MovieLens users; compare it with baselines.

    python examples/bandit.py --local-model                  # SmolLM2 on this machine
    python examples/bandit.py --base-url URL --model NAME    # any OpenAI-compatible endpoint

N users are stepped at once by ``SimulatedUserVectorEnv``. Three policies meet the same users
(same seeds): LinUCB, which learns online from every rating; popularity (the items most often
rated 4-5 in training); and uniform random. Every policy respects the action mask. The learning
curve is the mean reward (mean rating of the slate, 1..5) per block of steps; then LinUCB,
frozen, is evaluated on other users against popularity. LinUCB scores an item for a user from
the item's year, genres and popularity and from the user's recent ratings per genre (read from
the observation), one linear model shared by all users, with an upper-confidence bonus.

Every LLM call lands in the database (``--work-dir``): a rerun is answered from the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, case, func
from sqlmodel import Session, col, select

from examples.interrupted import interrupted_line
from lusifer.core.config import LLMConfig, StructuredOutput
from lusifer.core.errors import LusiferError
from lusifer.core.settings import get_settings
from lusifer.data import Dataset, load_movielens_100k
from lusifer.env import EnvConfig, LocalExecutor, SimulatedUserVectorEnv, profile_history
from lusifer.env.observation import ObservationLayout
from lusifer.llm import OpenAICompatibleModel
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import CallUse, EnvEpisode, LLMCall

console = Console()


class Policy(Protocol):
    """Chooses a slate for one user and may learn from the ratings."""

    name: str

    def act(self, obs: NDArray[np.float32], mask: NDArray[np.int8], k: int) -> NDArray[np.int64]:
        """A slate of ``k`` allowed item indices."""
        ...

    def learn(
        self, obs: NDArray[np.float32], slate: NDArray[np.int64], ratings: NDArray[np.int64]
    ) -> None:
        """Learn from the ratings of a slate (0: not rated)."""
        ...


def _top_k(scores: NDArray[np.float64], mask: NDArray[np.int8], k: int) -> NDArray[np.int64]:
    masked = np.where(mask > 0, scores, -np.inf)
    best = np.argpartition(-masked, k)[:k]
    return best[np.argsort(-masked[best])].astype(np.int64)


class Popularity:
    """The items most often rated 4 or 5 in training, the same for everyone."""

    name = "popularity"

    def __init__(self, liked_counts: NDArray[np.float64]) -> None:
        self._scores = liked_counts

    def act(self, obs: NDArray[np.float32], mask: NDArray[np.int8], k: int) -> NDArray[np.int64]:
        return _top_k(self._scores, mask, k)

    def learn(
        self, obs: NDArray[np.float32], slate: NDArray[np.int64], ratings: NDArray[np.int64]
    ) -> None:
        return None


class Uniform:
    """Allowed items drawn uniformly."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs: NDArray[np.float32], mask: NDArray[np.int8], k: int) -> NDArray[np.int64]:
        return self._rng.choice(np.flatnonzero(mask), size=k, replace=False).astype(np.int64)

    def learn(
        self, obs: NDArray[np.float32], slate: NDArray[np.int64], ratings: NDArray[np.int64]
    ) -> None:
        return None


class LinUCB:
    """A linear upper-confidence-bound policy over (user, item) features, learning per rating."""

    name = "LinUCB"

    def __init__(
        self,
        item_features: NDArray[np.float32],
        popularity: NDArray[np.float64],
        layout: ObservationLayout,
        alpha: float = 0.5,
    ) -> None:
        self._items = item_features.astype(np.float64)
        self._genres = self._items[:, 1:]
        self._pop = (np.log1p(popularity) / np.log1p(popularity.max()))[:, None]
        self._layout = layout
        self.alpha = alpha
        dim = self._items.shape[1] + 1 + self._genres.shape[1] + 1
        self._a_inv = np.eye(dim)
        self._b = np.zeros(dim)

    def _affinity(self, obs: NDArray[np.float32]) -> NDArray[np.float64]:
        """The user's mean centred rating per genre over the recent ratings in ``obs``."""
        slots = obs[self._layout.recent].reshape(self._layout.window, self._layout.slot_size)
        present = slots[:, 0] > 0
        centred = (slots[present, 1].astype(np.float64) - 0.5) * 2.0  # -1 (hated) .. 1 (loved)
        genres = slots[present, 3:].astype(np.float64)
        counts = genres.sum(axis=0)
        affinity: NDArray[np.float64] = np.divide(
            centred @ genres, counts, out=np.zeros_like(counts), where=counts > 0
        )
        return affinity

    def _phi(self, obs: NDArray[np.float32]) -> NDArray[np.float64]:
        taste = self._genres * self._affinity(obs)
        bias = np.ones((len(self._items), 1))
        return np.hstack([self._items, self._pop, taste, bias])

    def act(self, obs: NDArray[np.float32], mask: NDArray[np.int8], k: int) -> NDArray[np.int64]:
        phi = self._phi(obs)
        theta = self._a_inv @ self._b
        bonus = np.sqrt(np.einsum("ij,jk,ik->i", phi, self._a_inv, phi))
        return _top_k(phi @ theta + self.alpha * bonus, mask, k)

    def learn(
        self, obs: NDArray[np.float32], slate: NDArray[np.int64], ratings: NDArray[np.int64]
    ) -> None:
        phi = self._phi(obs)
        for index, rating in zip(slate, ratings, strict=True):
            if rating <= 0:
                continue
            x = phi[index]
            # Sherman-Morrison: the inverse stays exact without refactoring A.
            ax = self._a_inv @ x
            self._a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
            self._b += (float(rating) - 3.0) / 2.0 * x


def rollout(
    vec: SimulatedUserVectorEnv, policy: Policy, steps: int, seed: int, *, learn: bool
) -> tuple[list[float], str | None]:
    """Run ``steps`` vector steps; the mean reward of the users that took each step, and the
    first episode of the first sub-environment."""
    k = vec.sim.config.slate_size
    obs, infos = vec.reset(seed=seed)
    first_episode = vec.episode_ids[0]
    starting = np.zeros(vec.num_envs, dtype=np.bool_)
    curve: list[float] = []
    for _ in range(steps):
        masks = infos["action_mask"]
        actions = np.stack([policy.act(obs[n], masks[n], k) for n in range(vec.num_envs)])
        next_obs, rewards, terminated, truncated, infos = vec.step(actions)
        stepped = ~starting  # the others were reset by this step (their action was ignored)
        if learn:
            for n in np.flatnonzero(stepped):
                policy.learn(obs[n], actions[n], infos["ratings"][n])
        curve.append(float(rewards[stepped].mean()) if stepped.any() else float("nan"))
        starting = terminated | truncated
        obs = next_obs
    return curve, first_episode


def _blocks(curve: Sequence[float], size: int) -> list[float]:
    return [float(np.nanmean(curve[i : i + size])) for i in range(0, len(curve), size)]


def _bar(value: float, low: float = 1.0, high: float = 5.0, width: int = 24) -> str:
    filled = round((value - low) / (high - low) * width) if np.isfinite(value) else 0
    return "█" * max(0, min(width, filled))


def liked_counts(dataset: Dataset, fold: str, item_ids: Sequence[int]) -> NDArray[np.float64]:
    """How often each item was rated 4 or 5 in the fold's training ratings."""
    index = {item: n for n, item in enumerate(item_ids)}
    counts = np.zeros(len(item_ids))
    for rating in dataset.folds[fold].train:
        if rating.rating >= 4 and rating.item_id in index:
            counts[index[rating.item_id]] += 1
    return counts


def _data_dir(given: Path | None) -> Path:
    for candidate in (given, os.environ.get("LUSIFER_DATA_DIR"), get_settings().data_dir):
        if candidate and (Path(candidate) / "ml-100k" / "u.data").is_file():
            return Path(candidate)
    raise SystemExit("no MovieLens data: pass --data-dir DIR (holding ml-100k/ and tmdb/)")


@contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[tuple[str, str, StructuredOutput]]:
    if args.local_model:
        # Only the example, outside the kernel, may start services of local mode.
        from coordinator.local import LOCAL_MODEL_NAME, local_model_server

        with local_model_server(args.work_dir) as base_url:
            yield base_url, LOCAL_MODEL_NAME, "json_object"
    else:
        if not args.base_url or not args.model:
            raise SystemExit("pass --local-model, or --base-url and --model")
        yield args.base_url, args.model, args.structured_output


def episode_user(engine: Engine, episode_id: str) -> int | None:
    """The user of an episode."""
    with Session(engine) as session:
        episode = session.get(EnvEpisode, episode_id)
    return episode.user_id if episode else None


def _call_stats(vec: SimulatedUserVectorEnv) -> tuple[int, int, int, int]:
    with Session(vec.sim.engine) as session:
        row = session.exec(
            select(
                func.count(),
                func.sum(case((col(CallUse.cached), 1), else_=0)),
                func.sum(LLMCall.prompt_tokens),
                func.sum(LLMCall.completion_tokens),
            )
            .select_from(CallUse)
            .join(LLMCall, LLMCall.key == CallUse.call_key)  # type: ignore[arg-type]
            .where(CallUse.run_id == vec.sim.spec_id)
        ).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The example's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--local-model", action="store_true", help="start the local SmolLM2 server")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint")
    p.add_argument("--model", help="model name at the endpoint")
    p.add_argument("--structured-output", default="json_schema", help="json_schema|json_object")
    p.add_argument("--data-dir", type=Path, help="directory holding ml-100k/ (and tmdb/)")
    p.add_argument("--work-dir", type=Path, default=Path("lusifer-runs/bandit"))
    p.add_argument("--users", type=int, default=4, help="users stepped at once")
    p.add_argument("--train-steps", type=int, default=20, help="vector steps per policy")
    p.add_argument("--eval-steps", type=int, default=6, help="vector steps of the evaluation")
    p.add_argument("--block", type=int, default=4, help="steps per row of the learning curve")
    p.add_argument("--slate-size", type=int, default=3)
    p.add_argument("--episode-steps", type=int, default=10, help="steps before truncation")
    p.add_argument("--update-every", type=int, default=5, help="profile update period")
    p.add_argument("--overview-chars", type=int, default=0, help="0: no overviews (short)")
    p.add_argument("--profile-tokens", type=int, default=200, help="longest profile answer")
    p.add_argument("--threads", type=int, default=1, help="concurrent LLM calls (1: llama.cpp)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and print the learning curve; a failure is one line and exit code 1."""
    args = parse_args(argv)
    try:
        return _train_and_report(args)
    except LusiferError as err:
        # A model that times out or a bad input is expected: say it in one line.
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print(interrupted_line(args.work_dir), highlight=False)
        return 130


def _train_and_report(args: argparse.Namespace) -> int:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    root = _data_dir(args.data_dir)
    overviews = root / "tmdb" / "ml-100k_movies_tmdb.csv"
    dataset = load_movielens_100k(
        root / "ml-100k", overviews if overviews.is_file() else None, folds=("u1",)
    )
    started = time.perf_counter()
    with _endpoint(args) as (base_url, model_name, output):
        llm = LLMConfig(
            base_url=base_url,
            model=model_name,
            structured_output=output,
            profile_max_tokens=args.profile_tokens,
        )
        config = EnvConfig(
            llm=llm,
            fold="u1",
            slate_size=args.slate_size,
            max_steps=args.episode_steps,
            update_every=args.update_every,
            profile_history=10,
            profile_batch=10,
            recent_k=5,
            obs_window=10,
            overview_chars=args.overview_chars,
            max_reask=1,
        )
        engine = get_engine(f"sqlite:///{(args.work_dir / 'bandit.db').resolve()}")
        create_tables(engine)
        model = OpenAICompatibleModel(base_url, None, timeout_s=300)
        vec = SimulatedUserVectorEnv(
            args.users,
            dataset,
            config,
            engine=engine,
            executor=LocalExecutor(engine, model, max_threads=args.threads),
        )
        catalog = vec.sim.catalog
        liked = liked_counts(dataset, "u1", catalog.item_ids)
        layout = vec.sim.observations.layout
        linucb = LinUCB(catalog.features, liked, layout)
        policies: list[Policy] = [linucb, Popularity(liked), Uniform(args.seed)]
        curves: dict[str, list[float]] = {}
        shown: str | None = None
        for policy in policies:
            t0 = time.perf_counter()
            curves[policy.name], episode = rollout(
                vec, policy, args.train_steps, args.seed, learn=policy is linucb
            )
            shown = shown or episode
            console.print(f"ran {policy.name}: {time.perf_counter() - t0:.0f} s")
        linucb.alpha = 0.0  # evaluation: exploit only, keep learning off
        evaluation = {
            p.name: rollout(vec, p, args.eval_steps, args.seed + 1000, learn=False)[0]
            for p in policies[:2]
        }
        history = profile_history(engine, shown or "")
        user = episode_user(engine, shown or "")
        calls, cached, prompt_tokens, completion_tokens = _call_stats(vec)
        vec.close()
    elapsed = time.perf_counter() - started

    table = Table(title=f"Learning curve: mean rating per slate, {args.users} users at once")
    table.add_column("steps", justify="right")
    for name in curves:
        table.add_column(name, justify="right")
    table.add_column("LinUCB", justify="left")
    blocks = {name: _blocks(curve, args.block) for name, curve in curves.items()}
    for row in range(len(blocks["LinUCB"])):
        first = row * args.block + 1
        last = min(args.train_steps, first + args.block - 1)
        cells = [f"{blocks[name][row]:.2f}" for name in curves]
        table.add_row(f"{first}-{last}", *cells, _bar(blocks["LinUCB"][row]))
    table.add_row("all", *[f"{np.nanmean(c):.2f}" for c in curves.values()], "")
    console.print(table)
    scores = ", ".join(f"{name} {np.nanmean(c):.2f}" for name, c in evaluation.items())
    console.print(
        f"Evaluation on other users ({args.eval_steps} steps, LinUCB frozen, no bonus): {scores}"
    )
    console.print(f"Profiles of user {user} in LinUCB's first episode:")
    for version in history:
        console.print(f"  after step {version.step} ({version.source}): {version.profile[:200]}")
        if version.step:
            console.print(f"    change: {version.explanation[:200]}")
    console.print(
        f"{calls} LLM calls ({cached} from the cache), {prompt_tokens} prompt and "
        f"{completion_tokens} completion tokens, {elapsed:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
