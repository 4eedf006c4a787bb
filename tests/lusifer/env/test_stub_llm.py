"""The environment over real MovieLens data and the stub LLM server over HTTP: profile updates
stored and returned, and the same transitions for the same seed at temperature 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session, select

from lusifer.core.config import LLMConfig
from lusifer.data import Dataset, load_movielens_100k
from lusifer.env import EnvConfig, SimulatedUserEnv
from lusifer.llm import OpenAICompatibleModel
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import EnvProfileUpdate, LLMCall
from lusifer.stub import StubConfig, StubServer


@pytest.fixture(scope="module")
def movielens() -> Dataset:
    import os

    data = os.environ.get("LUSIFER_DATA_DIR")
    if not data:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    root = Path(data)
    return load_movielens_100k(
        root / "ml-100k", root / "tmdb" / "ml-100k_movies_tmdb.csv", folds=("u1",)
    )


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig()) as server:
        yield server


def _config(base_url: str, **fields: Any) -> EnvConfig:
    return EnvConfig.model_validate(
        {
            "llm": LLMConfig(base_url=base_url, model="stub-model", temperature=0.0),
            "fold": "u1",
            "slate_size": 4,
            "max_steps": 6,
            "update_every": 2,
            **fields,
        }
    )


def _env(dataset: Dataset, stub: StubServer, db: Path, **fields: Any) -> SimulatedUserEnv:
    engine = get_engine(f"sqlite:///{db}")
    create_tables(engine)
    model = OpenAICompatibleModel(stub.base_url, None)
    return SimulatedUserEnv(dataset, _config(stub.base_url, **fields), engine=engine, model=model)


def _rollout(env: SimulatedUserEnv, seed: int, steps: int) -> list[Any]:
    """Reset with ``seed`` and take masked random slates from an action space seeded alike."""
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    out: list[Any] = [(obs, info)]
    for _ in range(steps):
        mask = info["action_mask"]
        slate = np.random.default_rng(seed + len(out)).choice(
            np.flatnonzero(mask), size=env.action_space.shape[0], replace=False
        )
        obs, reward, terminated, truncated, info = env.step(slate)
        out.append((obs, reward, terminated, truncated, info))
    return out


def test_profile_updates_are_returned_and_stored(
    movielens: Dataset, stub: StubServer, tmp_path: Path
) -> None:
    env = _env(movielens, stub, tmp_path / "a.db")
    try:
        transitions = _rollout(env, seed=11, steps=4)
    finally:
        env.close()
    infos = [t[-1] for t in transitions]
    assert [len(i["profile_history"]) for i in infos] == [1, 1, 2, 2, 3]
    history = infos[-1]["profile_history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    assert all(h["profile"] and h["explanation"] for h in history)
    assert history[1]["profile"] != history[0]["profile"]  # the stub hashes the new ratings
    assert len(history[2]["item_ids"]) == 8  # two slates of four
    assert all(t[1] >= 1.0 for t in transitions[1:])  # mean ratings of valid slates
    with Session(env.sim.engine) as session:
        rows = session.exec(
            select(EnvProfileUpdate)
            .where(EnvProfileUpdate.episode_id == env.episode_id)
            .order_by(EnvProfileUpdate.step)  # type: ignore[arg-type]
        ).all()
    assert [(r.step, r.profile, r.explanation) for r in rows] == [
        (h["step"], h["profile"], h["explanation"]) for h in history
    ]


def test_same_seed_same_transitions_at_temperature_zero(
    movielens: Dataset, stub: StubServer, tmp_path: Path
) -> None:
    runs = []
    for name in ("first.db", "second.db"):
        # Separate databases: the second run is answered by the LLM, not the call cache.
        env = _env(movielens, stub, tmp_path / name)
        try:
            runs.append(_rollout(env, seed=5, steps=4))
        finally:
            env.close()
        with Session(env.sim.engine) as session:
            assert len(session.exec(select(LLMCall)).all()) > 0
    first, second = runs
    for a, b in zip(first, second, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            if isinstance(x, dict):
                assert x.keys() == y.keys()
                for key in x:
                    np.testing.assert_equal(x[key], y[key])
            else:
                np.testing.assert_array_equal(x, y)
