"""Celery tasks: load the job by id, run the kernel function, store, run or hand on follow-ups."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from functools import lru_cache

from celery import Celery, Task
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from lusifer.baseline_jobs import execute_baseline_job
from lusifer.celery_app import BASELINE_TASK, ENV_STEP_TASK, PROFILE_TASK, RATING_TASK
from lusifer.config import LLMConfig
from lusifer.db import get_engine
from lusifer.endpoints import api_key, resolve_base_url
from lusifer.env.dynamics import execute_env_request
from lusifer.env.store import fail_request, set_state
from lusifer.errors import (
    BudgetExhausted,
    ConfigurationError,
    LusiferError,
    PermanentLLMError,
    TransientLLMError,
)
from lusifer.execution import JobOutcome, execute_profile_job, execute_rating_job
from lusifer.jobstore import (
    claim_job,
    claim_job_with_run_status,
    fail_run,
    finish_and_take_followups,
    finish_job,
    ready_followups,
    release_job,
    requeue_job,
    still_held,
)
from lusifer.llm import ChatModel, OpenAICompatibleModel
from lusifer.ratelimit import RateLimiter, RateLimits, limiter_key, redis_for_broker
from lusifer.runs import RunContext, load_run_context
from lusifer.settings import Settings, get_settings
from lusifer.tables import Job, JobKind, JobState
from workers.slots import call_slot, chunk_pool

log = logging.getLogger("lusifer.worker")


# The worker's threads share one client per endpoint; the lock keeps the first jobs, which
# start together, from building one each.
_model_lock = threading.Lock()


@lru_cache(maxsize=8)
def _model(
    base_url: str,
    timeout_s: float,
    api_key: str | None,
    attempts: int,
    backoff_max_s: float,
    limiter: tuple[str, str, RateLimits] | None,
) -> ChatModel:
    shared = None
    if limiter is not None:
        # The limiter lives in the broker's Redis, which every worker of the run reaches.
        broker_url, model, limits = limiter
        shared = RateLimiter(redis_for_broker(broker_url), limiter_key(base_url, model), limits)
    return OpenAICompatibleModel(
        base_url,
        api_key,
        timeout_s=timeout_s,
        attempts=attempts,
        backoff_max_s=backoff_max_s,
        limiter=shared,
    )


def model_for(config: LLMConfig, settings: Settings) -> ChatModel:
    """The chat model of a run, built once per worker process."""
    base_url = resolve_base_url(
        config,
        settings,
        "only local mode starts it; run `lusifer resume RUN` without LUSIFER_BROKER_URL",
    )
    limits = config.rate_limits()
    limiter = None
    if limits.active:
        if not settings.broker_url:
            raise ConfigurationError(
                "rate limits need the broker's Redis: set LUSIFER_BROKER_URL for the worker"
            )
        limiter = (settings.broker_url, config.model, limits)
    with _model_lock:
        return _model(
            base_url,
            config.timeout_s,
            api_key(settings),
            settings.llm_attempts,
            settings.llm_backoff_max_s,
            limiter,
        )


def _engine(settings: Settings) -> Engine:
    if not settings.database_url:
        raise ConfigurationError(
            "the worker has no database: set LUSIFER_DATABASE_URL to the run's database"
        )
    return get_engine(settings.database_url)


def run_job(task: Task, job_id: str) -> str:
    """Run one job to its end; transient LLM failures hand it back to the queue.

    A profile job that ends done goes on with its user's rating jobs in this worker (see
    ``_rate_followups``): no message, claim or profile read per chunk.
    """
    settings = get_settings()
    engine = _engine(settings)
    claimed = claim_job_with_run_status(engine, job_id, settings.job_lease_s)
    if claimed is None:
        return "skipped: finished, running elsewhere, or unknown"
    job, status = claimed
    if status == "failed":
        # The run was stopped for a permanent reason; `lusifer resume` sends the job again.
        requeue_job(engine, job_id)
        return "skipped: run stopped"
    try:
        ctx = load_run_context(engine, job.run_id)
        model = model_for(ctx.config.llm, settings)
        if job.kind == JobKind.PROFILE:
            outcome = execute_profile_job(engine, job, ctx, model, gate=call_slot)
        else:
            outcome = execute_rating_job(engine, job, ctx, model, gate=call_slot)
    except TransientLLMError as err:
        if task.request.retries >= settings.job_max_retries:
            finish_job(engine, job_id, JobState.FAILED, error=f"gave up after retries: {err}")
            _fail_dependents(engine, job_id)
            return "failed"
        delay = min(300.0, (2**task.request.retries) * 2.0) * random.uniform(0.5, 1.5)
        countdown = max(delay, err.retry_after or 0.0)
        # Queued until the countdown ends: the coordinator does not take it for lost before.
        requeue_job(engine, job_id, str(err), due_in_s=countdown)
        # Celery's own limit must not cut in before ours: past it, retry() raises and the
        # job would be left queued with no message.
        raise task.retry(countdown=countdown, max_retries=settings.job_max_retries + 1) from None
    except OperationalError as err:
        # The database went away (a restart breaks the pooled connections; they are not
        # pinged before use). Hand the job back and try again shortly; if the database is
        # still away, the job's lease hands it back instead.
        log.warning("job %s met a database error, retrying: %s", job_id, str(err).splitlines()[0])
        with contextlib.suppress(SQLAlchemyError):
            requeue_job(engine, job_id, "database unavailable", due_in_s=5.0)
        raise task.retry(countdown=5.0, max_retries=settings.job_max_retries + 1) from None
    except (PermanentLLMError, BudgetExhausted, LusiferError) as err:
        state = _settle_error(engine, job, err)
        if job.kind == JobKind.PROFILE and state == JobState.FAILED:
            _fail_dependents(engine, job_id)
        return state
    state = JobState.FAILED if outcome.error else JobState.DONE
    if job.kind != JobKind.PROFILE:
        _finish(engine, job_id, outcome)
        return state
    if state != JobState.DONE:
        _finish(engine, job_id, outcome)
        _fail_dependents(engine, job_id)
        return state
    followups = finish_and_take_followups(engine, job_id, reasks=outcome.reasks)
    _rate_followups(engine, followups, ctx, model, outcome.profile)
    return state


def _finish(engine: Engine, job_id: str, outcome: JobOutcome) -> None:
    finish_job(
        engine,
        job_id,
        JobState.FAILED if outcome.error else JobState.DONE,
        error=outcome.error,
        raw_output=outcome.raw_output,
        reasks=outcome.reasks,
    )


def _settle_error(engine: Engine, job: Job, err: LusiferError) -> str:
    """Record how a job that raised ends (other than by a transient LLM error)."""
    if isinstance(err, PermanentLLMError):
        finish_job(engine, job.id, JobState.FAILED, error=str(err))
        fail_run(engine, job.run_id, str(err))
        return "failed: permanent"
    if isinstance(err, BudgetExhausted):
        # Its finished calls are recorded; `lusifer resume --max-cost HIGHER` sends it again.
        release_job(engine, job.id)
        return "skipped: cost cap reached"
    finish_job(engine, job.id, JobState.FAILED, error=str(err))
    return JobState.FAILED


def _rate_followups(
    engine: Engine, jobs: list[Job], ctx: RunContext, model: ChatModel, profile: str | None
) -> None:
    """Hand the rating jobs a profile job just took to the chunk pool, side by side.

    The task does not wait for them: its thread takes the next profile job while the ratings
    use the slots profile calls leave (``workers.slots``).
    """
    pool = chunk_pool()
    claimed_at = time.monotonic()
    for job in jobs:
        pool.submit(_rate_one, engine, job, ctx, model, profile, claimed_at)


def _rate_one(
    engine: Engine,
    job: Job,
    ctx: RunContext,
    model: ChatModel,
    profile: str | None,
    claimed_at: float,
) -> None:
    waited_s = time.monotonic() - claimed_at
    try:
        if waited_s > get_settings().job_lease_s / 4 and not still_held(engine, job):
            # It waited here longer than its lease and was handed out again: the other
            # holder runs it.
            return
        outcome = execute_rating_job(engine, job, ctx, model, profile, gate=call_slot)
    except TransientLLMError as err:
        # Back to pending: the coordinator sends it as a job of its own, with the queue's
        # retries and backoff.
        log.info("rating job %s handed back to the queue: %s", job.id, err)
        release_job(engine, job.id)
        return
    except LusiferError as err:
        _settle_error(engine, job, err)
        return
    except Exception:
        # The database or something unforeseen failed: the job stays running and its lease
        # hands it back (the coordinator releases stale jobs); the other chunks go on.
        log.exception("rating job %s stopped", job.id)
        return
    _finish(engine, job.id, outcome)


def _fail_dependents(engine: Engine, job_id: str) -> None:
    for dependent in ready_followups(engine, job_id):
        finish_job(engine, dependent, JobState.FAILED, error=f"its profile job {job_id} failed")


def run_baseline_job(job_id: str) -> str:
    """Fit one baseline on its stored split and store its predictions; no LLM is involved."""
    settings = get_settings()
    engine = _engine(settings)
    job = claim_job(engine, job_id, settings.job_lease_s)
    if job is None:
        return "skipped: finished, running elsewhere, or unknown"
    try:
        execute_baseline_job(engine, job)
    except SQLAlchemyError:
        # The database, not the fit, failed: the job stays running and its lease hands it
        # back to the queue (the coordinator releases stale jobs).
        raise
    except Exception as err:  # a fit that fails does so again with the same seed: record it
        log.exception("baseline job %s failed", job_id)
        finish_job(engine, job_id, JobState.FAILED, error=f"{type(err).__name__}: {err}")
        return JobState.FAILED
    finish_job(engine, job_id, JobState.DONE)
    return JobState.DONE


def run_env_request(task: Task, request_id: str) -> str:
    """Run one environment reset or step; transient LLM failures hand it back to the queue."""
    settings = get_settings()
    engine = _engine(settings)
    set_state(engine, [request_id], JobState.RUNNING)
    try:
        return execute_env_request(engine, request_id, lambda config: model_for(config, settings))
    except TransientLLMError as err:
        if task.request.retries >= settings.job_max_retries:
            fail_request(engine, request_id, err)
            return JobState.FAILED
        # The environment is waiting on this step: retry soon, but not in lockstep.
        delay = min(30.0, (2**task.request.retries) * 0.5) * random.uniform(0.5, 1.5)
        # Celery's own limit must not cut in before ours: past it, retry() raises and the
        # job would be left queued with no message.
        raise task.retry(
            countdown=max(delay, err.retry_after or 0.0),
            max_retries=settings.job_max_retries + 1,
        ) from None
    except LusiferError as err:
        fail_request(engine, request_id, err)
        return JobState.FAILED


def register_tasks(app: Celery) -> None:
    """Register the job tasks on an app under their shared names."""

    @app.task(name=PROFILE_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def profile(self: Task, job_id: str) -> str:
        return run_job(self, job_id)

    @app.task(name=RATING_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def rate(self: Task, job_id: str) -> str:
        return run_job(self, job_id)

    @app.task(name=BASELINE_TASK, acks_late=True)  # type: ignore[untyped-decorator]
    def baseline(job_id: str) -> str:
        return run_baseline_job(job_id)

    @app.task(name=ENV_STEP_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
    def env_step(self: Task, request_id: str) -> str:
        return run_env_request(self, request_id)
