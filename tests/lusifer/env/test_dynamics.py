"""Running step requests from the database: idempotent, in order, errors stored by kind."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.env.dynamics import execute_env_request
from lusifer.env.simulator import Simulator
from lusifer.env.store import (
    create_episode,
    create_step,
    fail_request,
    load_results,
    raise_stored,
)
from lusifer.llm import FakeChatModel
from lusifer.store.tables import EnvProfileUpdate, EnvStepRequest
from tests.lusifer.env.conftest import env_config, fake_rating, tiny_dataset


def _episode(engine: Engine, fake: FakeChatModel) -> tuple[str, str]:
    sim = Simulator(tiny_dataset(), env_config(), engine=engine, model=fake)
    history = sim.catalog.histories[1]
    return sim.spec_id, create_episode(engine, "ep-1", sim.spec_id, 1, history)


def test_a_finished_request_is_not_run_again(engine: Engine, fake: FakeChatModel) -> None:
    _, reset = _episode(engine, fake)
    assert execute_env_request(engine, reset, lambda _c: fake) == "done"
    step = create_step(engine, "ep-1", 1, [21, 22])
    assert execute_env_request(engine, step, lambda _c: fake) == "done"
    calls = len(fake.requests)
    assert execute_env_request(engine, step, lambda _c: fake) == "done"
    assert len(fake.requests) == calls
    result = load_results(engine, [step])[step]
    assert result.ratings == {21: fake_rating(21), 22: fake_rating(22)}
    assert result.profile is not None and result.profile.step == 1


def test_a_step_before_its_predecessor_finished_fails(engine: Engine, fake: FakeChatModel) -> None:
    _episode(engine, fake)
    step = create_step(engine, "ep-1", 1, [21])
    assert execute_env_request(engine, step, lambda _c: fake) == "failed"
    with Session(engine) as session:
        row = session.get(EnvStepRequest, step)
    assert row is not None and row.error_kind == "data"
    assert "before its earlier steps finished" in (row.error or "")
    assert fake.requests == []


def test_llm_errors_are_left_to_the_caller_and_stored_by_kind(
    engine: Engine, fake: FakeChatModel
) -> None:
    _, reset = _episode(engine, fake)

    def broken(_request: object) -> str:
        raise PermanentLLMError("the key was refused")

    with pytest.raises(PermanentLLMError):
        execute_env_request(engine, reset, lambda _c: FakeChatModel(broken))  # type: ignore[arg-type]
    fail_request(engine, reset, TransientLLMError("gave up after retries"))
    result = load_results(engine, [reset])[reset]
    assert result.state == "failed" and result.error_kind == "transient"
    with pytest.raises(TransientLLMError, match="gave up"):
        result.raise_if_failed(reset)
    with pytest.raises(PermanentLLMError):
        raise_stored("permanent", "x")


def test_the_update_learns_from_the_window_since_the_last_one(
    engine: Engine, fake: FakeChatModel
) -> None:
    sim = Simulator(tiny_dataset(), env_config(update_every=2), engine=engine, model=fake)
    reset = create_episode(engine, "ep-2", sim.spec_id, 1, sim.catalog.histories[1])
    execute_env_request(engine, reset, lambda _c: fake)
    for step, slate in ((1, [21, 22]), (2, [23]), (3, [24, 25]), (4, [26])):
        execute_env_request(engine, create_step(engine, "ep-2", step, slate), lambda _c: fake)
    with Session(engine) as session:
        rows = session.exec(select(EnvProfileUpdate).order_by(EnvProfileUpdate.step)).all()  # type: ignore[arg-type]
    assert [(r.step, json.loads(r.item_ids_json)) for r in rows[1:]] == [
        (2, [21, 22, 23]),
        (4, [24, 25, 26]),
    ]
    # The rating prompt of step 3 carried the profile of step 2 and the episode's ratings.
    rating_prompts = [r for r in fake.requests if r.schema_name == "ratings"]
    system = rating_prompts[2].messages[0][1]
    assert rows[1].profile in system
    assert '<item id="23">' in system
