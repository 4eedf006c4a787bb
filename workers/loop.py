"""A worker process's event loop: where its profile and rating jobs make their LLM calls.

Celery still hands out the jobs: a task's thread passes the job id to the loop and waits for
the verdict (done, failed, skipped, or retry in N seconds), so acknowledgements, retries,
Flower and warm shutdown work as for any Celery task. The calls themselves, their cache
lookups and their records are coroutines of one loop per process, on an asyncpg pool and an
aiohttp session: a process holds its concurrency's worth of calls in flight without a thread
each, and an answer is handled as soon as it arrives instead of after a turn at the GIL.

A profile job that ends done claims its user's rating jobs and starts them in the loop
without waiting for them; its task returns and the thread takes the next profile job. It does
so only while the process holds fewer than ``max_held()`` such jobs: profiles get the slots
first, so on a long run the chunks they took along would pile up without end (seen: 217k
jobs marked running and 1.6 GB per worker, 20 minutes into a million-job run). Past the bound
a profile finishes alone and its ratings go through the queue like any job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from celery import signals
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from lusifer.core.config import LLMConfig
from lusifer.core.errors import (
    ConfigurationError,
    LusiferError,
    TransientLLMError,
)
from lusifer.core.settings import Settings, get_settings
from lusifer.execute.async_jobs import (
    claim_job_async,
    execute_profile_job_async,
    execute_rating_job_async,
    finish_and_take_followups_async,
    finish_job_async,
    still_held_async,
)
from lusifer.execute.settle import (
    fail_dependents,
    over_attempts,
    settle_error,
    settle_exhausted,
    settle_unexpected,
)
from lusifer.execute.sync_jobs import JobOutcome
from lusifer.llm import AsyncChatModel, AsyncOpenAICompatibleModel
from lusifer.llm.endpoints import api_key, resolve_base_url
from lusifer.llm.ratelimit import RateLimiter, limiter_key, redis_for_broker
from lusifer.llm.waits import stop_waiting
from lusifer.store.async_db import AsyncDatabase, open_database
from lusifer.store.engines import get_engine
from lusifer.store.jobs import finish_job, release_job, requeue_job
from lusifer.store.runs import RunContext, load_run_context
from lusifer.store.tables import Job, JobKind, JobState, RunStatus
from workers.slots import PrioritySlots, concurrency, max_held

log = logging.getLogger("lusifer.worker")
# A database that went away or is too busy to give a connection: ridden out, not a job's fault.
DATABASE_AWAY = (OperationalError, InterfaceError, PoolTimeoutError)
# What a task reports when the database stayed away past LUSIFER_DB_OUTAGE_S: the job's lease
# hands it back once the database answers again.
LEFT_TO_LEASE = "left to its lease: database unavailable"


T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """The job was handed back: the task retries it after ``countdown_s``."""

    countdown_s: float
    reason: str
    # False: the job was never claimed (the database was away when the message came), so no
    # attempt of it was counted; the message must survive however long the outage lasts.
    counted: bool = True


class WorkerLoop:
    """One event loop in a thread of its own, with what its jobs share."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lusifer-loop")
        self._thread.daemon = True
        self._thread.start()
        # Touched only from the loop's thread: no locks.
        self._databases: dict[str, AsyncDatabase] = {}
        self._models: dict[tuple[Any, ...], AsyncChatModel] = {}
        self._contexts: dict[tuple[str, str], asyncio.Future[RunContext]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._slots: PrioritySlots | None = None

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the loop and wait for its result (from a task's thread)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Start a coroutine in the loop without waiting for it (from inside the loop)."""
        task = self._loop.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def holds(self) -> int:
        """Rating jobs taken along from finished profiles and not ended yet."""
        return len(self._background)

    def slots(self) -> PrioritySlots:
        """The process's calls-in-flight slots."""
        if self._slots is None:
            self._slots = PrioritySlots(concurrency())
        return self._slots

    def database(self, settings: Settings) -> AsyncDatabase:
        """The run database, opened once per process."""
        if not settings.database_url:
            raise ConfigurationError(
                "the worker has no database: set LUSIFER_DATABASE_URL to the run's database"
            )
        db = self._databases.get(settings.database_url)
        if db is None:
            # No connection is held across an LLM call, so the blocking engine's pool size
            # serves the loop too: 4 workers x 80 calls in flight stay far below PostgreSQL's
            # 100 connections.
            size = settings.db_pool_size + settings.db_max_overflow
            db = open_database(get_engine(settings.database_url), size)
            self._databases[settings.database_url] = db
        return db

    async def context(self, db: AsyncDatabase, run_id: str) -> RunContext:
        """The run's context, read once per process (a run's configuration never changes).

        The first jobs of a run arrive together: they share one read instead of each
        reading the run's dataset texts in a thread of its own.
        """
        key = (str(db.engine.url), run_id)
        pending = self._contexts.get(key)
        if pending is None:
            pending = asyncio.ensure_future(db.run_sync(partial(load_run_context, run_id=run_id)))
            self._contexts[key] = pending
        try:
            return await asyncio.shield(pending)
        except BaseException:
            if pending.done():
                # A failed read is not kept: the next job reads again.
                self._contexts.pop(key, None)
            raise

    def model(self, config: LLMConfig, settings: Settings) -> AsyncChatModel:
        """The run's chat model, built once per process and endpoint."""
        base_url = resolve_base_url(
            config,
            settings,
            "only local mode starts it; run `lusifer resume RUN` without LUSIFER_BROKER_URL",
        )
        limits = config.rate_limits()
        key = (base_url, config.model, config.timeout_s, limits, settings.llm_attempts)
        model = self._models.get(key)
        if model is None:
            limiter = None
            if limits.active:
                if not settings.broker_url:
                    raise ConfigurationError(
                        "rate limits need the broker's Redis: set LUSIFER_BROKER_URL for the worker"
                    )
                # The limiter lives in the broker's Redis, which every worker of the run reaches.
                limiter = RateLimiter(
                    redis_for_broker(settings.broker_url),
                    limiter_key(base_url, config.model),
                    limits,
                    max_pause_s=settings.max_wait_s,
                )
            model = AsyncOpenAICompatibleModel(
                base_url,
                api_key(settings),
                timeout_s=config.timeout_s,
                attempts=settings.llm_attempts,
                backoff_max_s=settings.llm_backoff_max_s,
                limiter=limiter,
            )
            self._models[key] = model
        return model

    def drain(self) -> None:
        """Wait for the rating chunks still running, then close connections and sessions."""

        async def finish() -> None:
            while self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)
            for model in self._models.values():
                close = getattr(model, "aclose", None)
                if close is not None:
                    await close()
            for db in self._databases.values():
                await db.close()

        if self._thread.is_alive():
            self.run(finish())

    def warm_up(self, settings: Settings) -> None:
        """Open the database pool before the first job: its connections are not a job's wait."""
        if settings.database_url:
            self.run(self.database(settings).warm_up())


_loop: WorkerLoop | None = None


_loop_lock = threading.Lock()


def worker_loop() -> WorkerLoop:
    """This process's loop, started on first use (after a fork, in the child)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = WorkerLoop()
        return _loop


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _warm_up_on_start(**_: Any) -> None:
    # The first wave of jobs would otherwise wait for the loop and the pool together.
    try:
        worker_loop().warm_up(get_settings())
    except Exception as err:  # a database down at start is met again, and reported, by the jobs
        log.warning("could not open the database pool at start: %s", err)


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _stop_waits(**_: Any) -> None:
    # A warm shutdown waits for the running jobs: those asleep in a backoff, a Retry-After
    # or a limiter pause hand themselves back now rather than hold the worker for minutes.
    stop_waiting()


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _drain_on_shutdown(**_: Any) -> None:
    # A warm shutdown waits for the running tasks; the rating chunks they started finish too.
    with _loop_lock:
        loop = _loop
    if loop is not None:
        loop.drain()


async def run_job_async(job_id: str, retries: int) -> str | Retry:
    """Run one profile or rating job to its end; what the task reports, or a retry."""
    settings = get_settings()
    runner = worker_loop()
    db = runner.database(settings)
    try:
        claimed = await claim_job_async(db, job_id, settings.job_lease_s)
    except DATABASE_AWAY as err:
        # The database is away as the message arrives: keep the message (a countdown retry
        # publishes it again) rather than let the task fail and its message be acked away.
        reason = str(err).splitlines()[0]
        log.warning("job %s waits for the database: %s", job_id, reason)
        return Retry(min(30.0, 2.0 * (retries + 1)) * random.uniform(0.75, 1.25), reason, False)
    if claimed is None:
        return "skipped: finished, running elsewhere, or unknown"
    job, status = claimed
    if over_attempts(job, settings.job_max_attempts):
        # Handed out too often (it kept killing its worker, or its messages kept going
        # missing): it ends here, with its last error, and its run goes on.
        return await _ride_out(db, partial(settle_exhausted, job=job)) or LEFT_TO_LEASE
    if status == RunStatus.FAILED:
        # The run was stopped for a permanent reason; `lusifer resume` sends the job again.
        await _ride_out(db, partial(requeue_job, job_id=job_id))
        return "skipped: run stopped"
    gate = runner.slots().hold
    try:
        ctx = await runner.context(db, job.run_id)
        model = runner.model(ctx.config.llm, settings)
        if job.kind == JobKind.PROFILE:
            outcome = await execute_profile_job_async(db, job, ctx, model, gate=gate)
        else:
            outcome = await execute_rating_job_async(db, job, ctx, model, gate=gate)
    except Exception as err:  # each kind ends its own way: see _settle_raised
        return await _settle_raised(db, job, err, retries)
    state = JobState.FAILED if outcome.error else JobState.DONE
    try:
        takes_along = runner.holds() < max_held()
        if job.kind != JobKind.PROFILE or state != JobState.DONE or not takes_along:
            await _finish(db, job_id, outcome)
            if job.kind == JobKind.PROFILE and state == JobState.FAILED:
                await _ride_out(db, partial(fail_dependents, job_id=job_id))
            return state
        followups = await finish_and_take_followups_async(db, job_id, reasks=outcome.reasks)
    except DATABASE_AWAY as err:
        # Its calls are recorded: run again, it finds every answer in the call cache.
        reason = str(err).splitlines()[0]
        log.warning("job %s could not be finished, handing it back: %s", job_id, reason)
        await _ride_out(
            db, partial(requeue_job, job_id=job_id, error="database unavailable", due_in_s=5.0)
        )
        return Retry(5.0, reason)
    claimed_at = time.monotonic()
    for rating_job in followups:
        runner.start(_rate_one(db, rating_job, ctx, model, outcome.profile, claimed_at))
    return state


async def _settle_raised(db: AsyncDatabase, job: Job, err: Exception, retries: int) -> str | Retry:
    """How a job that raised ends: a retry, handed back, failed, or its run stopped."""
    settings = get_settings()
    if isinstance(err, TransientLLMError):
        if retries >= settings.job_max_retries:
            error = f"gave up after retries: {err}"
            await _ride_out(
                db, partial(finish_job, job_id=job.id, state=JobState.FAILED, error=error)
            )
            await _ride_out(db, partial(fail_dependents, job_id=job.id))
            return JobState.FAILED
        delay = min(300.0, (2**retries) * 2.0) * random.uniform(0.5, 1.5)
        countdown = max(delay, err.retry_after or 0.0)
        # Queued until the countdown ends: the coordinator does not take it for lost before.
        await _ride_out(db, partial(requeue_job, job_id=job.id, error=str(err), due_in_s=countdown))
        return Retry(countdown, str(err))
    if isinstance(err, DATABASE_AWAY):
        # The database went away (a restart breaks the pooled connections). Hand the job
        # back and try again shortly; if the database is still away, its lease hands it back.
        reason = str(err).splitlines()[0]
        log.warning("job %s met a database error, retrying: %s", job.id, reason)
        await _ride_out(
            db, partial(requeue_job, job_id=job.id, error="database unavailable", due_in_s=5.0)
        )
        return Retry(5.0, reason)
    if isinstance(err, LusiferError):
        state = await _ride_out(db, partial(settle_error, job=job, err=err)) or LEFT_TO_LEASE
        if job.kind == JobKind.PROFILE and state == JobState.FAILED:
            await _ride_out(db, partial(fail_dependents, job_id=job.id))
        return state
    # Nobody anticipated it: a few attempts, then the job fails with it; never a job
    # left running for ever behind "0 failed".
    log.exception("job %s raised unexpected", job.id)
    settled = await _settle_unexpected(db, job, err, to_queue=True)
    if settled == "retry":
        return Retry(5.0 * job.attempts, str(err))
    return settled or LEFT_TO_LEASE


async def _finish(db: AsyncDatabase, job_id: str, outcome: JobOutcome) -> None:
    await finish_job_async(
        db,
        job_id,
        JobState.FAILED if outcome.error else JobState.DONE,
        error=outcome.error,
        raw_output=outcome.raw_output,
        reasks=outcome.reasks,
    )


async def _rate_one(
    db: AsyncDatabase,
    job: Job,
    ctx: RunContext,
    model: AsyncChatModel,
    profile: str | None,
    claimed_at: float,
) -> None:
    """A rating chunk its profile job claimed, rated with the profile it holds."""
    waited_s = time.monotonic() - claimed_at
    try:
        if waited_s > get_settings().job_lease_s / 4 and not await still_held_async(db, job):
            # It waited longer than its lease and was handed out again: the other holder runs it.
            return
        outcome = await execute_rating_job_async(
            db, job, ctx, model, profile, gate=worker_loop().slots().hold
        )
        await _finish(db, job.id, outcome)
    except TransientLLMError as err:
        # Back to pending: the coordinator sends it as a job of its own, with the queue's
        # retries and backoff.
        log.info("rating job %s handed back to the queue: %s", job.id, err)
        await _ride_out(db, partial(release_job, job_id=job.id))
    except LusiferError as err:
        await _ride_out(db, partial(settle_error, job=job, err=err))
    except DATABASE_AWAY as err:
        # The database went away: hand the chunk back now if it can be reached; otherwise its
        # lease hands it back. The other chunks go on.
        log.warning("rating job %s met a database error: %s", job.id, str(err).splitlines()[0])
        await _ride_out(db, partial(release_job, job_id=job.id, error="database unavailable"))
    except Exception as err:
        log.exception("rating job %s raised unexpected", job.id)
        await _settle_unexpected(db, job, err, to_queue=False)


async def _ride_out(db: AsyncDatabase, call: Callable[[Engine], T]) -> T | None:
    """Run a bookkeeping statement, riding out a database outage for ``LUSIFER_DB_OUTAGE_S``.

    A job whose statement failed is handed back as soon as the database answers again, not
    after its lease; past the window the lease is the last resort (None).
    """
    deadline = time.monotonic() + get_settings().db_outage_s
    delay = 0.5
    while True:
        try:
            return await db.run_sync(call)
        except DATABASE_AWAY as err:
            if time.monotonic() + delay > deadline:
                log.warning("database still away, leaving the job to its lease: %s", err)
                return None
            log.warning("database away, retrying in %.1f s: %s", delay, str(err).splitlines()[0])
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)


async def _settle_unexpected(
    db: AsyncDatabase, job: Job, err: Exception, *, to_queue: bool
) -> str | None:
    """``settle_unexpected`` through a database outage; None when it outlasted the window."""
    cap = get_settings().job_max_unexpected
    settle = partial(settle_unexpected, job=job, err=err, max_unexpected=cap, to_queue=to_queue)
    return await _ride_out(db, settle)
