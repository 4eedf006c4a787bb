"""Jobs done from an event loop: the same records as the blocking path, on SQLite and PostgreSQL.

PostgreSQL runs the kernel's statements through asyncpg, SQLite through the blocking engine in
threads; both must store the same calls, uses, steps, ratings and job states.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from coordinator.plan import plan_run, store_plan
from lusifer.core.config import LLMConfig, RunConfig
from lusifer.core.errors import BudgetExhausted
from lusifer.execute.async_jobs import (
    AsyncRecordedModel,
    claim_job_async,
    execute_profile_job_async,
    execute_rating_job_async,
    finish_and_take_followups_async,
    still_held_async,
)
from lusifer.llm import ChatRequest, ChatResult, FakeChatModel
from lusifer.method.prompts import load_prompt_set
from lusifer.store.async_db import (
    AsyncDatabase,
    PostgresDatabase,
    compile_for_asyncpg,
    open_database,
)
from lusifer.store.call_cache import CallBook, CallContext
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.jobs import CLAIM
from lusifer.store.runs import load_run_context
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, ProfileStep, Run, SimulatedRating
from tests.integration.services import postgres_schema
from tests.lusifer.execute.test_sync_jobs import _answer, _dataset

T = TypeVar("T")


class AsyncFake:
    """``FakeChatModel`` answered from the loop."""

    def __init__(self, fake: FakeChatModel) -> None:
        self.fake = fake

    async def complete(self, request: ChatRequest) -> ChatResult:
        await asyncio.sleep(0)
        return self.fake.complete(request)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = get_engine(f"sqlite:///{tmp_path / 'async.db'}")
        create_tables(engine)
        yield engine
        return
    with postgres_schema("lusifer_async_exec") as url:
        engine = get_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


class Loop:
    """One event loop for a test: an asyncpg pool belongs to the loop it was opened in."""

    def __init__(self, engine: Engine) -> None:
        self.loop = asyncio.new_event_loop()
        self.db: AsyncDatabase = open_database(engine, pool_size=4)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        self.run(self.db.close())
        self.loop.close()


@pytest.fixture
def loop(engine: Engine) -> Iterator[Loop]:
    running = Loop(engine)
    yield running
    running.close()


def _plan(engine: Engine) -> None:
    config = RunConfig.model_validate(
        {"folds": ("f1",), "profile_history": 20, "llm": {"base_url": "http://x/v1", "model": "m"}}
    )
    dataset = _dataset()
    store_plan(engine, plan_run("r1", config, dataset, load_prompt_set("lusifer")), dataset)


def test_postgres_statements_are_compiled_once_with_their_own_literals() -> None:
    compiled = compile_for_asyncpg(CLAIM)
    assert compile_for_asyncpg(CLAIM) is compiled
    assert "$1" in compiled.sql and "%(" not in compiled.sql
    # The states the statement names itself travel as parameters it carries.
    assert JobState.RUNNING in compiled.defaults.values()
    args = compiled.args({"job_id": "j", "stale": 1, "now": 2})
    assert len(args) == len(compiled.names) and "j" in args


def test_a_claimed_profile_job_builds_stores_and_hands_on_its_ratings(
    engine: Engine, loop: Loop
) -> None:
    _plan(engine)
    ctx = load_run_context(engine, "r1")
    fake = FakeChatModel(_answer)
    model = AsyncFake(fake)

    claimed = loop.run(claim_job_async(loop.db, "r1/f1/1/profile", lease_s=60))
    assert claimed is not None
    job, status = claimed
    assert job.state == JobState.RUNNING and job.attempts == 1 and status != "failed"
    # Claimed twice within its lease: the second claim is refused.
    assert loop.run(claim_job_async(loop.db, "r1/f1/1/profile", lease_s=60)) is None

    outcome = loop.run(execute_profile_job_async(loop.db, job, ctx, model))
    assert outcome.error is None and outcome.new_calls == 2
    assert outcome.profile is not None and "drama" in outcome.profile
    followups = loop.run(finish_and_take_followups_async(loop.db, job.id, reasks=outcome.reasks))
    assert [f.id for f in followups] == ["r1/f1/1/rating/0"]
    assert followups[0].state == JobState.RUNNING
    assert loop.run(still_held_async(loop.db, followups[0]))

    rating = loop.run(execute_rating_job_async(loop.db, followups[0], ctx, model, outcome.profile))
    assert rating.error is None and rating.new_calls == 1
    # Again, as a redelivered job would: every answer comes from the cache.
    again = loop.run(execute_rating_job_async(loop.db, followups[0], ctx, model))
    assert again.error is None and again.new_calls == 0

    with Session(engine) as session:
        steps = session.exec(select(ProfileStep).order_by(ProfileStep.step)).all()
        ratings = session.exec(select(SimulatedRating.item_id, SimulatedRating.rating)).all()
        calls = session.exec(select(func.count()).select_from(LLMCall)).one()
        profile_job = session.get(Job, job.id)
    assert [s.step for s in steps] == [0, 1]
    assert json.loads(steps[0].item_ids_json) == list(range(6, 16))
    assert sorted(ratings) == [(i, 4) for i in range(26, 31)]
    assert calls == len(fake.requests) == 3
    assert profile_job is not None and profile_job.state == JobState.DONE


def test_a_job_handed_out_again_is_no_longer_held(engine: Engine, loop: Loop) -> None:
    _plan(engine)
    claimed = loop.run(claim_job_async(loop.db, "r1/f1/1/profile", lease_s=60))
    assert claimed is not None
    # Its lease ran out and another worker claimed it: one attempt more than this copy has.
    assert loop.run(claim_job_async(loop.db, "r1/f1/1/profile", lease_s=0)) is not None
    assert not loop.run(still_held_async(loop.db, claimed[0]))


def test_an_answer_that_stays_invalid_fails_the_job_with_the_raw_text(
    engine: Engine, loop: Loop
) -> None:
    _plan(engine)
    ctx = load_run_context(engine, "r1")
    with Session(engine) as session:
        profile_job = session.get(Job, "r1/f1/1/profile")
        rating_job = session.get(Job, "r1/f1/1/rating/0")
    assert profile_job is not None and rating_job is not None
    loop.run(
        execute_profile_job_async(loop.db, profile_job, ctx, AsyncFake(FakeChatModel(_answer)))
    )
    garbage = FakeChatModel(lambda _request: "I would rather not rate movies today.")
    outcome = loop.run(execute_rating_job_async(loop.db, rating_job, ctx, AsyncFake(garbage)))
    assert outcome.error is not None and "no valid rating" in outcome.error
    assert outcome.raw_output is not None and "rather not" in outcome.raw_output
    assert len(garbage.requests) == ctx.config.max_reask + 1


PRICED = LLMConfig(
    base_url="http://x/v1", model="m", price_prompt_per_mtok=0.15, price_completion_per_mtok=0.6
)
CONTEXT = CallContext(run_id="run-a", job_id="job-1", fold="u1")
REQUEST = ChatRequest(model="m", messages=(("system", "s"), ("user", "Rate item 1.")))


class Priced:
    async def complete(self, request: ChatRequest) -> ChatResult:
        return ChatResult(
            text='{"1": 4}', prompt_tokens=1200, completion_tokens=300, cached_tokens=100, retries=1
        )


def test_calls_are_recorded_and_their_spend_stops_at_the_cap(engine: Engine, loop: Loop) -> None:
    with Session(engine) as session:
        session.add(
            Run(
                id=CONTEXT.run_id,
                config_json="{}",
                prompt_set="p",
                prompt_version="1",
                prompt_hash="h",
                prompts_json="{}",
                dataset_fingerprint="f",
                max_cost_usd=0.0005,
            )
        )
        session.commit()
    recorded = AsyncRecordedModel(loop.db, Priced(), CallBook(PRICED, CONTEXT))
    loop.run(recorded.complete(REQUEST))  # $0.00036
    loop.run(recorded.complete(REQUEST.model_copy(update={"sample_index": 1})))  # $0.00072
    with pytest.raises(BudgetExhausted):
        loop.run(recorded.complete(REQUEST.model_copy(update={"sample_index": 2})))
    assert loop.run(recorded.complete(REQUEST)).text == '{"1": 4}'  # cached: free
    assert (recorded.book.new_calls, recorded.book.cache_hits) == (2, 1)
    with Session(engine) as session:
        run = session.get(Run, CONTEXT.run_id)
        stored = session.get(LLMCall, REQUEST.cache_key())
        uses = session.exec(select(CallUse).order_by(CallUse.call_key)).all()
    assert run is not None and run.spent_usd == pytest.approx(0.00072)
    assert stored is not None and stored.cached_tokens == 100
    assert ChatRequest.model_validate_json(stored.request_json) == REQUEST
    assert len(uses) == 2 and {u.retries for u in uses} == {1}


@pytest.mark.integration
def test_a_database_that_is_not_there_is_an_operational_error() -> None:
    # Nothing listens on port 1: the worker hands the job back, as for psycopg's errors.
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    db = PostgresDatabase(engine, pool_size=1)

    async def attempt() -> None:
        await db.first(CLAIM, {"job_id": "j", "stale": None, "now": None})

    with pytest.raises(OperationalError):
        asyncio.run(attempt())
