"""Executing jobs with the kernel functions on a SQLite database and a fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from coordinator.plan import plan_run, store_plan
from lusifer.core.config import RunConfig
from lusifer.data import Dataset, Fold, Item, Rating, User
from lusifer.execute.sync_jobs import execute_profile_job, execute_rating_job
from lusifer.llm import ChatRequest, FakeChatModel
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.runs import load_run_context
from lusifer.store.tables import CallUse, Job, LLMCall, ProfileStep, SimulatedRating


def _dataset() -> Dataset:
    items = {i: Item(i, f"Movie {i}", 1990 + i, ("Drama",), None) for i in range(1, 31)}
    train = tuple(Rating(1, i, 1 + i % 5, 1000 + i) for i in range(1, 26))
    test = tuple(Rating(1, i, 1 + i % 5, 2000 + i) for i in range(26, 31))
    return Dataset(
        name="tiny",
        users={1: User(1, 30, "F", "writer")},
        items=items,
        folds={"f1": Fold.of("f1", train, test)},
        fingerprint="tiny-fingerprint",
    )


def _answer(request: ChatRequest) -> str:
    schema = request.json_schema or {}
    if "profile" in schema.get("properties", {}):
        return json.dumps(
            {"profile": f"likes drama (turn {len(request.messages)})", "change": "more drama"}
        )
    return json.dumps({key: 4 for key in schema["properties"]})


@pytest.fixture
def planned(tmp_path: Path) -> tuple[Engine, str]:
    engine = get_engine(f"sqlite:///{tmp_path / 'exec.db'}")
    create_tables(engine)
    config = RunConfig.model_validate(
        {"folds": ("f1",), "profile_history": 20, "llm": {"base_url": "http://x/v1", "model": "m"}}
    )
    dataset = _dataset()
    store_plan(engine, plan_run("r1", config, dataset, load_prompt_set("lusifer")), dataset)
    return engine, "r1"


def _job(engine: Engine, job_id: str) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_profile_then_ratings_are_stored_once_even_when_run_twice(
    planned: tuple[Engine, str],
) -> None:
    engine, run_id = planned
    ctx = load_run_context(engine, run_id)
    model = FakeChatModel(_answer)
    profile_job, rating_job = _job(engine, "r1/f1/1/profile"), _job(engine, "r1/f1/1/rating/0")
    for _ in range(2):
        assert execute_profile_job(engine, profile_job, ctx, model).error is None
        assert execute_rating_job(engine, rating_job, ctx, model).error is None
    with Session(engine) as session:
        steps = session.exec(select(ProfileStep).order_by(ProfileStep.step)).all()
        ratings = session.exec(select(SimulatedRating.item_id, SimulatedRating.rating)).all()
        n_calls = session.exec(select(func.count()).select_from(LLMCall)).one()
        cached = session.exec(select(func.count()).where(CallUse.cached == True)).one()  # noqa: E712
    # 20 ratings in batches of 10: two profile steps, the second an update.
    assert [s.step for s in steps] == [0, 1]
    assert json.loads(steps[0].item_ids_json) == list(range(6, 16))
    assert sorted(ratings) == [(i, 4) for i in range(26, 31)]
    # The second execution was answered from the call cache: the model saw three requests.
    assert len(model.requests) == 3 == n_calls
    assert cached == 0  # same job, same call: the use is recorded once


def test_an_answer_that_stays_invalid_fails_the_job_with_the_raw_text(
    planned: tuple[Engine, str],
) -> None:
    engine, run_id = planned
    ctx = load_run_context(engine, run_id)
    execute_profile_job(engine, _job(engine, "r1/f1/1/profile"), ctx, FakeChatModel(_answer))
    garbage = FakeChatModel(lambda _request: "I would rather not rate movies today.")
    outcome = execute_rating_job(engine, _job(engine, "r1/f1/1/rating/0"), ctx, garbage)
    assert outcome.error is not None and "no valid rating" in outcome.error
    assert outcome.raw_output is not None and "rather not" in outcome.raw_output
    assert outcome.reasks == ctx.config.max_reask
    assert len(garbage.requests) == ctx.config.max_reask + 1
    with Session(engine) as session:
        assert (
            session.exec(
                select(func.count()).where(SimulatedRating.rating != None)  # noqa: E711
            ).one()
            == 0
        )


def test_a_rating_job_without_a_profile_fails_cleanly(planned: tuple[Engine, str]) -> None:
    engine, run_id = planned
    ctx = load_run_context(engine, run_id)
    outcome = execute_rating_job(
        engine, _job(engine, "r1/f1/1/rating/0"), ctx, FakeChatModel(_answer)
    )
    assert outcome.error is not None and "profile" in outcome.error
