"""The vector environment through real Celery worker processes, real Redis and PostgreSQL and
the stub LLM server over HTTP: the same transitions as in-process threads, ids on the queue,
and a step of 16 users that costs about one LLM latency."""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

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
from tests.integration.test_distributed_run import BrokerTap

pytestmark = pytest.mark.integration

BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture(scope="module")
def movielens(data_dir_module: Path) -> Dataset:
    return load_movielens_100k(
        data_dir_module / "ml-100k",
        data_dir_module / "tmdb" / "ml-100k_movies_tmdb.csv",
        folds=("u1",),
    )


@pytest.fixture(scope="module")
def data_dir_module() -> Path:
    import os

    value = os.environ.get("LUSIFER_DATA_DIR")
    if not value:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    return Path(value)


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_schema("lusifer_env") as url:
        yield url


def _config(base_url: str, **fields: Any) -> EnvConfig:
    return EnvConfig.model_validate(
        {
            "llm": LLMConfig(base_url=base_url, model="stub-model"),
            "fold": "u1",
            "slate_size": 4,
            "max_steps": 3,
            "update_every": 2,
            "profile_history": 20,
            "profile_batch": 10,
            **fields,
        }
    )


def _celery(database_url: str, queue: str) -> tuple[Engine, StepExecutor]:
    engine = get_engine(database_url)
    create_tables(engine)
    settings = Settings(broker_url=BROKER, database_url=database_url, queue=queue)
    return engine, CeleryExecutor(engine, make_celery(settings), queue, timeout_s=120)


def _threads(path: Path, base_url: str) -> tuple[Engine, StepExecutor]:
    engine = get_engine(f"sqlite:///{path}")
    create_tables(engine)
    return engine, LocalExecutor(engine, OpenAICompatibleModel(base_url, None))


def _rollout(vec: SimulatedUserVectorEnv, seed: int, steps: int) -> list[Any]:
    """Reset, then slates of allowed items drawn by a generator seeded per step."""
    obs, infos = vec.reset(seed=seed)
    out: list[Any] = [(obs, infos)]
    for step in range(steps):
        rng = np.random.default_rng(step)
        actions = np.stack(
            [
                rng.choice(
                    np.flatnonzero(mask), size=vec.single_action_space.shape[0], replace=False
                )
                for mask in infos["action_mask"]
            ]
        )
        obs, rewards, terminations, truncations, infos = vec.step(actions)
        out.append((obs, rewards, terminations, truncations, infos))
    return out


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        np.testing.assert_array_equal(a, b)


def test_workers_return_the_same_transitions_as_threads_with_ids_on_the_queue(
    movielens: Dataset, database_url: str, tmp_path: Path
) -> None:
    queue = f"env-{secrets.token_hex(4)}"
    with (
        stub_server() as stub,
        celery_workers(service_env(database_url, queue, None), tmp_path, count=2, threads=4),
    ):
        config = _config(stub.base_url)
        engine, executor = _threads(tmp_path / "threads.db", stub.base_url)
        local = SimulatedUserVectorEnv(4, movielens, config, engine=engine, executor=executor)
        expected = _rollout(local, seed=3, steps=5)
        local.close()
        local_calls = stub.chat_count()

        engine, executor = _celery(database_url, queue)
        remote = SimulatedUserVectorEnv(4, movielens, config, engine=engine, executor=executor)
        with BrokerTap() as tap:
            got = _rollout(remote, seed=3, steps=5)
        episode_ids = [e for e in remote.episode_ids if e]
        remote.close()
        # Separate databases: the workers asked the LLM again rather than reading a cache.
        assert stub.chat_count() == 2 * local_calls

    _assert_same(got, expected)
    # max_steps=3: the sub-environments truncated at step 3 and restarted at step 4.
    assert got[3][3].all() and (got[4][4]["step"] == 0).all()
    histories = got[2][4]["profile_history"]
    assert all(len(h) == 2 and h[1]["source"] == "update" for h in histories)
    # The queue carried request ids only: no item text, no profile, no prompt.
    broker_text = "\n".join(tap.lines)
    assert any(f"{e}/1" in broker_text for e in episode_ids)
    profile = histories[0][1]["profile"]
    assert "Toy Story" not in broker_text and "Title:" not in broker_text
    assert profile[:30] not in broker_text


@pytest.mark.parametrize("where", ["threads", "workers"])
def test_a_vector_step_of_16_users_costs_about_one_llm_latency(
    movielens: Dataset, database_url: str, tmp_path: Path, where: str
) -> None:
    latency, users = 1.0, 16
    queue = f"env-{secrets.token_hex(4)}"
    # The stub starts below; its URL replaces this placeholder.
    config = _config("http://stub.invalid/v1", max_steps=10, update_every=100, profile_history=10)
    with (
        stub_server("--latency", str(latency)) as stub,
        celery_workers(service_env(database_url, queue, None), tmp_path, count=2, threads=8),
    ):
        config = config.model_copy(
            update={"llm": config.llm.model_copy(update={"base_url": stub.base_url})}
        )
        if where == "threads":
            engine, executor = _threads(tmp_path / "threads.db", stub.base_url)
        else:
            engine, executor = _celery(database_url, queue)
        vec = SimulatedUserVectorEnv(users, movielens, config, engine=engine, executor=executor)
        vec.reset(seed=100)  # warms up: workers finish starting, load the environment
        started = time.perf_counter()
        _, infos = vec.reset(seed=0)
        reset_s = time.perf_counter() - started
        times = []
        for step in range(3):
            actions = np.stack(
                [
                    np.random.default_rng(step).choice(np.flatnonzero(mask), size=4, replace=False)
                    for mask in infos["action_mask"]
                ]
            )
            started = time.perf_counter()
            *_, infos = vec.step(actions)
            times.append(time.perf_counter() - started)
        vec.close()
    median = statistics.median(times)
    print(
        f"\n{where}: reset of {users} users {reset_s:.2f} s; steps "
        + ", ".join(f"{t:.2f}" for t in times)
        + f" s (median {median:.2f} s) at {latency:.1f} s LLM latency"
    )
    # One after another, 16 users would take 16 s a step.
    assert median < 3 * latency


def test_sb3_vec_env_steps_16_users_in_about_one_latency_and_workers_reset_them(
    movielens: Dataset, database_url: str, tmp_path: Path
) -> None:
    latency, users = 1.0, 16
    queue = f"env-{secrets.token_hex(4)}"
    with (
        stub_server("--latency", str(latency)) as stub,
        celery_workers(service_env(database_url, queue, None), tmp_path, count=2, threads=8),
    ):
        config = _config(stub.base_url, max_steps=3, update_every=100, profile_history=10)
        engine, executor = _celery(database_url, queue)
        vector = SimulatedUserVectorEnv(users, movielens, config, engine=engine, executor=executor)
        vec = SB3VecEnv(vector)
        vec.seed(100)
        vec.reset()  # warms up: workers finish starting, load the environment
        rng = np.random.default_rng(0)
        times, dones = [], []
        for _ in range(3):
            masks = vec.env_method("action_mask")
            actions = np.stack([rng.choice(np.flatnonzero(m), 4, replace=False) for m in masks])
            started = time.perf_counter()
            _, _, done, infos = vec.step(actions)
            times.append(time.perf_counter() - started)
            dones.append(done)
        vec.close()
    # Steps 1 and 2 cost one latency each (16 users one after another: 16 s). Step 3 ends
    # every episode (max_steps=3): the workers reset all 16 users in a second batch.
    assert statistics.median(times[:2]) < 3 * latency, times
    assert not dones[0].any() and dones[2].all()
    assert all(i["TimeLimit.truncated"] and "terminal_observation" in i for i in infos)
    assert all(r["step"] == 0 for r in vec.reset_infos)
