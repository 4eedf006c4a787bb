"""Figure 5: environment steps per second of the vector environment at a slow stub LLM.

N users (1, 16, 64) step at once through ``SB3VecEnv`` over ``SimulatedUserVectorEnv``, first
in threads of this process, then through Celery worker processes (2 processes sharing N
threads). The stub answers every call after ``latency_s`` (1 s); profile updates are off
(``update_every`` past the episode), so a step is one rating call per user and the ideal is N
steps per second. A step in which episodes end adds their resets: episodes are longer than the
measured steps, so none does. Both ways use a fresh PostgreSQL schema, as the integration tests.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Table, print_table
from lusifer.core.config import LLMConfig
from lusifer.core.settings import Settings
from lusifer.data import Dataset, load_movielens_100k
from lusifer.env import CeleryExecutor, EnvConfig, LocalExecutor, SimulatedUserVectorEnv
from lusifer.env.executors import StepExecutor
from lusifer.env.sb3_vec import SB3VecEnv
from lusifer.llm import OpenAICompatibleModel
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine
from tests.integration.services import (
    REDIS_DB,
    celery_workers,
    postgres_schema,
    service_env,
    stub_server,
)

USERS = (1, 16, 64)
WAYS = ("threads", "workers")


def _config(base_url: str, steps: int) -> EnvConfig:
    return EnvConfig(
        llm=LLMConfig(base_url=base_url, model="stub-model"),
        fold="u1",
        slate_size=5,
        max_steps=steps + 1,
        update_every=steps + 1,
        profile_history=10,
        profile_batch=10,
        overview_chars=0,
    )


def _executor(way: str, database_url: str, base_url: str, users: int, queue: str) -> StepExecutor:
    engine = get_engine(database_url)
    if way == "threads":
        return LocalExecutor(engine, OpenAICompatibleModel(base_url, None), max_threads=users)
    settings = Settings(
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}", database_url=database_url, queue=queue
    )
    return CeleryExecutor(engine, make_celery(settings), queue, timeout_s=300)


def _measure_one(
    dataset: Dataset,
    way: str,
    users: int,
    database_url: str,
    base_url: str,
    queue: str,
    steps: int,
    latency_s: float,
) -> dict[str, Any]:
    engine = get_engine(database_url)
    vector = SimulatedUserVectorEnv(
        users,
        dataset,
        _config(base_url, steps),
        engine=engine,
        executor=_executor(way, database_url, base_url, users, queue),
    )
    env = SB3VecEnv(vector)
    try:
        env.seed(1000 + users)
        env.reset()  # warms up: workers load the environment, connections open
        started = time.perf_counter()
        env.seed(users)
        env.reset()
        reset_s = time.perf_counter() - started
        rng = np.random.default_rng(0)
        times = []
        for _ in range(steps):
            masks = env.env_method("action_mask")
            actions = np.stack([rng.choice(np.flatnonzero(m), 5, replace=False) for m in masks])
            started = time.perf_counter()
            env.step(actions)
            times.append(time.perf_counter() - started)
    finally:
        env.close()
    total = sum(times)
    return {
        "way": way,
        "users": users,
        "steps": steps,
        "reset_s": reset_s,
        "step_s": times,
        "median_step_s": statistics.median(times),
        "steps_per_s": users * steps / total,
        "ideal_steps_per_s": users / latency_s,
    }


def measure_env_steps(
    data_dir: Path, latency_s: float = 1.0, steps: int = 5, users: tuple[int, ...] = USERS
) -> dict[str, Any]:
    """Steps per second of N users through threads and through Celery workers."""
    dataset = load_movielens_100k(data_dir / "ml-100k", folds=("u1",))
    rows: list[dict[str, Any]] = []
    most = max(users)
    with tempfile.TemporaryDirectory(prefix="lusifer-bench-env-") as tmp:
        for way in WAYS:
            queue = f"bench-env-{secrets.token_hex(4)}"
            with postgres_schema("lusifer_bench_env") as database_url:
                create_tables(get_engine(database_url))
                env = service_env(database_url, queue, None)
                with stub_server("--latency", str(latency_s)) as stub:
                    workers: AbstractContextManager[object]
                    if way == "workers":
                        # 2 processes sharing as many threads as the most users stepped at once.
                        workers = celery_workers(env, Path(tmp), count=2, threads=most // 2 or 1)
                    else:
                        workers = nullcontext()
                    with workers:
                        for n in users:
                            rows.append(
                                _measure_one(
                                    dataset,
                                    way,
                                    n,
                                    database_url,
                                    stub.base_url,
                                    queue,
                                    steps,
                                    latency_s,
                                )
                            )
                            print_env_steps({"latency_s": latency_s, "rows": rows[-1:]})
    return {"latency_s": latency_s, "rows": rows}


def print_env_steps(figure: dict[str, Any]) -> None:
    """The steps/s table."""
    table = Table(title=f"Environment steps per second at {figure['latency_s']:.1f} s LLM latency")
    for column in ("way", "users", "steps/s", "ideal", "% of ideal", "median step", "reset"):
        table.add_column(column, justify="right")
    for row in figure["rows"]:
        table.add_row(
            row["way"],
            str(row["users"]),
            f"{row['steps_per_s']:.1f}",
            f"{row['ideal_steps_per_s']:.0f}",
            f"{100 * row['steps_per_s'] / row['ideal_steps_per_s']:.0f} %",
            f"{row['median_step_s']:.2f} s",
            f"{row['reset_s']:.2f} s",
        )
    print_table(table)
