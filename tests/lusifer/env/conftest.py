"""A tiny dataset, a fake LLM whose answers are known by hand, and a SQLite database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lusifer.core.config import LLMConfig
from lusifer.data import Dataset, Fold, Item, Rating, User
from lusifer.env import EnvConfig, SimulatedUserEnv
from lusifer.llm import ChatRequest, FakeChatModel
from lusifer.store.engines import create_tables, get_engine

GENRES = ("Comedy", "Drama", "Horror", "Sci-Fi")
N_ITEMS = 40
HISTORY = 12  # training ratings per user: items 1..12 (user 1), 3..14 (user 2), ...


def fake_rating(item_id: int) -> int:
    """What the fake simulated user rates an item: 1 + id % 5."""
    return 1 + item_id % 5


def tiny_dataset() -> Dataset:
    """40 movies of four genres, three users with 12 training ratings each."""
    items = {
        i: Item(i, f"Movie {i}", 1980 + i % 20, (GENRES[i % 4],), None)
        for i in range(1, N_ITEMS + 1)
    }
    train = tuple(
        Rating(u, i, fake_rating(i), 1000 * u + i)
        for u in (1, 2, 3)
        for i in range(2 * u - 1, 2 * u - 1 + HISTORY)
    )
    test = tuple(Rating(u, 39, 3, 9999) for u in (1, 2, 3))
    return Dataset(
        name="tiny",
        users={u: User(u, 20 + u, "F", "writer") for u in (1, 2, 3)},
        items=items,
        folds={"f1": Fold.of("f1", train, test)},
        fingerprint="tiny-env-fingerprint",
    )


def fake_answer(request: ChatRequest) -> str:
    """Ratings by ``fake_rating``; profiles that name the ratings they were written from."""
    schema = request.json_schema or {}
    props = schema.get("properties", {})
    if "profile" in props:
        user_text = request.messages[-1][1]
        n = user_text.count("<item ")
        return json.dumps(
            {"profile": f"A viewer profile written from {n} ratings.", "change": f"saw {n} more"}
        )
    return json.dumps({key: fake_rating(int(key)) for key in props})


def env_config(**fields: object) -> EnvConfig:
    """A small configuration over the tiny dataset."""
    base: dict[str, object] = {
        "llm": LLMConfig(base_url="http://fake.invalid/v1", model="fake"),
        "fold": "f1",
        "slate_size": 3,
        "max_steps": 5,
        "profile_history": 10,
        "profile_batch": 5,
        "recent_k": 4,
        "obs_window": 4,
    }
    base.update(fields)
    return EnvConfig.model_validate(base)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """A fresh SQLite database."""
    engine = get_engine(f"sqlite:///{tmp_path / 'env.db'}")
    create_tables(engine)
    return engine


@pytest.fixture
def fake() -> FakeChatModel:
    """The fake LLM."""
    return FakeChatModel(fake_answer)


MakeEnv = Callable[..., SimulatedUserEnv]


@pytest.fixture
def make_env(engine: Engine, fake: FakeChatModel) -> Iterator[MakeEnv]:
    """Build environments over the tiny dataset, the fake model and the SQLite database."""
    made: list[SimulatedUserEnv] = []

    def make(**fields: object) -> SimulatedUserEnv:
        env = SimulatedUserEnv(tiny_dataset(), env_config(**fields), engine=engine, model=fake)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
