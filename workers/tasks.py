"""Celery tasks: load the job by id, run the kernel function, store, run or hand on follow-ups."""

from __future__ import annotations

import logging
import random
import threading
from contextlib import suppress
from functools import lru_cache

from celery import Celery, Task
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from lusifer.core.config import LLMConfig, RateLimits
from lusifer.core.errors import (
    ConfigurationError,
    LusiferError,
    TransientLLMError,
)
from lusifer.core.settings import Settings, get_settings
from lusifer.evaluate.baseline_jobs import execute_baseline_job
from lusifer.execute.settle import describe_unexpected
from lusifer.llm import ChatModel, OpenAICompatibleModel
from lusifer.llm.endpoints import api_key, resolve_base_url
from lusifer.llm.ratelimit import RateLimiter, limiter_key, redis_for_broker
from lusifer.queue import (
    BASELINE_TASK,
    ENV_STEP_TASK,
    PROFILE_TASK,
    PROTOCOL_HEADER,
    RATING_TASK,
    protocol_mismatch,
)
from lusifer.store.engines import get_engine
from lusifer.store.jobs import (
    claim_job,
    finish_job,
    note_refusal,
)
from lusifer.store.tables import JobState
from workers.loop import Retry, run_job_async, worker_loop

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
        shared = RateLimiter(
            redis_for_broker(broker_url),
            limiter_key(base_url, model),
            limits,
            max_pause_s=get_settings().max_wait_s,
        )
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
    """Run one profile or rating job in the process's event loop (``workers.loop``).

    Transient LLM failures and a database that went away hand the job back to the queue with
    Celery's retries.
    """
    refusal = protocol_mismatch(task.request.get(PROTOCOL_HEADER))
    if refusal is not None:
        # Not run wrongly, not failed: handed back for a worker of the run's version. The
        # coordinator shows the reason within a minute (``coordinator.stall``).
        log.error("job %s %s", job_id, refusal)
        with suppress(SQLAlchemyError):
            note_refusal(_engine(get_settings()), job_id, refusal)
        raise task.retry(countdown=30.0, max_retries=None)
    verdict = worker_loop().run(run_job_async(job_id, task.request.retries))
    if isinstance(verdict, Retry):
        # Celery's own limit must not cut in before ours: past it, retry() raises and the
        # job would be left queued with no message.
        # A retry that counted no attempt (the database was away) is not capped here: the
        # job's attempts in the database bound every retry that did run it.
        limit = get_settings().job_max_retries + 1 if verdict.counted else None
        raise task.retry(countdown=verdict.countdown_s, max_retries=limit)
    return str(verdict)


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
    refusal = protocol_mismatch(task.request.get(PROTOCOL_HEADER))
    if refusal is not None:
        log.error("environment step %s %s", request_id, refusal)
        raise task.retry(countdown=30.0, max_retries=None)
    # The environment package (gymnasium and the rest of lusifer.env) is imported by the first
    # step: a worker that runs only profiles and ratings never loads it.
    from lusifer.env.dynamics import execute_env_request
    from lusifer.env.store import fail_request, set_state

    settings = get_settings()
    engine = _engine(settings)
    try:
        set_state(engine, [request_id], JobState.RUNNING)
        return execute_env_request(engine, request_id, lambda config: model_for(config, settings))
    except (OperationalError, InterfaceError) as err:
        # The database is away: keep the message (its retry is published again) rather than
        # let the task fail and the environment wait for a step nobody runs.
        log.warning("environment step %s waits for the database: %s", request_id, err)
        delay = min(30.0, 2.0 * (task.request.retries + 1)) * random.uniform(0.75, 1.25)
        raise task.retry(countdown=delay, max_retries=None) from None
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
    except Exception as err:
        # Nobody anticipated it: the step fails naming it, and the environment raises it,
        # rather than wait for a step left running.
        log.exception("environment step %s raised unexpected", request_id)
        fail_request(engine, request_id, LusiferError(describe_unexpected(err)))
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
