"""Doing a job from an asyncio event loop: the same dialogues, statements and bookkeeping as
``lusifer.execute.sync_jobs`` and ``lusifer.store.jobs``, with the I/O awaited instead of blocking.

A worker process keeps its LLM calls in flight as coroutines of one loop rather than as one
thread each: with 64-128 threads per process the GIL handed itself around more than the
threads did work, and every answer waited for it before the next request could go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from lusifer.core.errors import OutputValidationError
from lusifer.core.settings import get_settings
from lusifer.execute.sync_jobs import (
    MISSING_PROFILE,
    STORE_RATING,
    JobOutcome,
    latest_profile,
    profile_dialogue,
    profile_outcome,
    rating_job_dialogue,
    rating_outcome,
    rating_rows,
    step_rows,
    store_step_statement,
)
from lusifer.llm import AsyncChatModel, ChatRequest, ChatResult
from lusifer.method.dialogues import drive_async
from lusifer.store.async_db import AsyncDatabase
from lusifer.store.call_cache import ANSWER_AND_BUDGET, CallBook, CallContext
from lusifer.store.call_statements import part_statement, record_statement
from lusifer.store.jobs import (
    CLAIM,
    FINISH,
    FINISH_AND_TAKE_FOLLOWUPS,
    FINISH_DONE,
    STILL_HELD,
    TAKE_FOLLOWUPS,
    claim_params,
    claimed_job,
    finish_params,
    followup_jobs,
    still_held_params,
)
from lusifer.store.runs import RunContext
from lusifer.store.tables import Job, utcnow

# Held around each call (lookup, budget check, call, record): a worker's cap on calls in flight.
AsyncCallGate = Callable[[ChatRequest], AbstractAsyncContextManager[None]]

log = logging.getLogger("lusifer.worker")


class AsyncRecordedModel:
    """``RecordedModel`` for the event loop: cached, recorded, committed before it is used."""

    def __init__(
        self,
        db: AsyncDatabase,
        model: AsyncChatModel,
        book: CallBook,
        gate: AsyncCallGate | None = None,
    ) -> None:
        self._db = db
        self._model = model
        self._gate = gate
        self.book = book
        self._dialect = db.engine.dialect.name

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer from the cache, or call the model and commit the call at once."""
        if self._gate is None:
            return await self._complete(request)
        # The budget is checked inside the gate, as in ``RecordedModel``.
        async with self._gate(request):
            return await self._complete(request)

    async def _complete(self, request: ChatRequest) -> ChatResult:
        canonical, key, lookup = self.book.lookup(request)
        row = await self._db.first(ANSWER_AND_BUDGET, lookup)
        assert row is not None  # scalar subqueries: always one row
        cached = self.book.cached(row)
        if cached is not None:
            await self._record(*self.book.hit(key))
            return cached
        result = await self._model.complete(request)
        await self._record_new(*self.book.new_call(request, canonical, key, result))
        return result

    async def _record_new(self, present: tuple[str, ...], params: dict[str, Any]) -> None:
        """Record a call just paid for, riding out a short database outage.

        Handing the job back instead would pay for the same answer again on its next run.
        """
        deadline = time.monotonic() + get_settings().db_outage_s
        delay = 0.5
        while True:
            try:
                await self._record(present, params)
                return
            except (OperationalError, InterfaceError) as err:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("recording a call waits for the database: %s", err)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _record(self, present: tuple[str, ...], params: dict[str, Any]) -> None:
        if self._dialect == "postgresql":
            await self._db.execute(record_statement(present), params)
            return
        async with self._db.transaction() as tx:
            for name in present:
                await tx.execute(part_statement(self._dialect, name), params)


def _recorded(
    db: AsyncDatabase, model: AsyncChatModel, ctx: RunContext, job: Job, gate: AsyncCallGate | None
) -> AsyncRecordedModel:
    book = CallBook(ctx.config.llm, CallContext(ctx.run_id, job.id, job.fold))
    return AsyncRecordedModel(db, model, book, gate)


async def execute_profile_job_async(
    db: AsyncDatabase,
    job: Job,
    ctx: RunContext,
    model: AsyncChatModel,
    gate: AsyncCallGate | None = None,
) -> JobOutcome:
    """``execute_profile_job`` from the event loop."""
    recorded = _recorded(db, model, ctx, job, gate)
    try:
        steps = await drive_async(profile_dialogue(job, ctx), recorded.complete)
    except OutputValidationError as err:
        return JobOutcome(
            error=str(err), raw_output=err.raw_text, new_calls=recorded.book.new_calls
        )
    rows = step_rows(job, steps)
    if rows:
        await db.executemany(store_step_statement(db.engine.dialect.name), rows)
    return profile_outcome(steps, recorded.book.new_calls)


async def execute_rating_job_async(
    db: AsyncDatabase,
    job: Job,
    ctx: RunContext,
    model: AsyncChatModel,
    profile: str | None = None,
    gate: AsyncCallGate | None = None,
) -> JobOutcome:
    """``execute_rating_job`` from the event loop."""
    if profile is None:
        profile = await db.run_sync(
            lambda engine: latest_profile(engine, ctx.run_id, job.fold, job.user_id)
        )
    if profile is None:
        return MISSING_PROFILE
    recorded = _recorded(db, model, ctx, job, gate)
    outcome = await drive_async(rating_job_dialogue(job, ctx, profile), recorded.complete)
    rows = rating_rows(job, outcome)
    if rows:
        await db.executemany(STORE_RATING, rows)
    return rating_outcome(outcome, recorded.book.new_calls)


# --- Job states, the statements of ``lusifer.store.jobs`` ----------------------------------


async def claim_job_async(
    db: AsyncDatabase, job_id: str, lease_s: float
) -> tuple[Job, str | None] | None:
    """``claim_job_with_run_status`` from the event loop."""
    row = await db.first(CLAIM, claim_params(job_id, lease_s))
    return None if row is None else claimed_job(row)


async def finish_job_async(
    db: AsyncDatabase,
    job_id: str,
    state: str,
    *,
    error: str | None = None,
    raw_output: str | None = None,
    reasks: int = 0,
) -> None:
    """``finish_job`` from the event loop."""
    await db.execute(FINISH, finish_params(job_id, state, error, raw_output, reasks))


async def finish_and_take_followups_async(
    db: AsyncDatabase, job_id: str, *, reasks: int
) -> list[Job]:
    """Mark a job done and claim the pending jobs that waited for it, atomically.

    The caller runs them itself. The claim is the same conditional UPDATE as the queue's, so
    the coordinator's sweep, which may see them ready at the same moment, cannot take them too.
    """
    params = {"job_id": job_id, "reasks": reasks, "now": utcnow()}
    if db.engine.dialect.name == "postgresql":
        return followup_jobs(await db.all(FINISH_AND_TAKE_FOLLOWUPS, params))
    async with db.transaction() as tx:
        await tx.execute(FINISH_DONE, params)
        rows = await tx.all(TAKE_FOLLOWUPS, params)
    return followup_jobs(rows)


async def still_held_async(db: AsyncDatabase, job: Job) -> bool:
    """Renew the lease of a job claimed earlier, if nobody took it since; say whether it was.

    A job handed back after its lease ran out and claimed again has more attempts than the
    copy of it its first holder kept.
    """
    return await db.first(STILL_HELD, still_held_params(job)) is not None
