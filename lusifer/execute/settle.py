"""How a job that did not simply succeed ends: one set of rules for the workers, the Batch API
mode and the environment.

A permanent LLM error fails the job and stops its run; a spent budget hands the job back
for ``resume --max-cost``; any other error fails the job with its message, and a failed
profile job fails the rating jobs that waited for it.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from lusifer.core.errors import (
    BudgetExhausted,
    LusiferError,
    PermanentLLMError,
)
from lusifer.store.jobs import finish_job, release_job, requeue_job
from lusifer.store.run_states import fail_run
from lusifer.store.tables import Job, JobKind, JobState


def settle_error(engine: Engine, job: Job, err: LusiferError) -> str:
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


def fail_dependents(engine: Engine, job_id: str) -> None:
    """Fail the rating jobs that waited for a profile job that failed."""
    with Session(engine) as session:
        dependents = session.exec(
            select(Job.id).where(
                Job.depends_on == job_id,
                col(Job.state).in_([JobState.PENDING, JobState.QUEUED]),
            )
        ).all()
    for dependent in dependents:
        finish_job(engine, dependent, JobState.FAILED, error=f"its profile job {job_id} failed")


def fail_orphans(engine: Engine, run_id: str) -> None:
    """Fail every unfinished job whose profile job failed (a job that can never run)."""
    with Session(engine) as session:
        failed = session.exec(
            select(Job.id).where(
                Job.run_id == run_id,
                Job.state == JobState.FAILED,
                Job.kind == JobKind.PROFILE,
            )
        ).all()
    for job_id in failed:
        fail_dependents(engine, job_id)


def describe_unexpected(err: BaseException) -> str:
    """One line for an error nobody anticipated: its type and the first line of its text."""
    text = str(err).strip().splitlines()
    return f"unexpected {type(err).__name__}: {text[0] if text else 'no message'}"[:500]


def exhausted_message(job: Job) -> str:
    """Why a job handed out too often is failed: its attempts and its last error."""
    last = job.error or "none recorded (its worker died, or its message was lost)"
    return f"gave up after {job.attempts - 1} attempts; last error: {last}"


def over_attempts(job: Job, max_attempts: int) -> bool:
    """Whether a job just claimed has been handed out more often than the cap allows.

    ``attempts`` grows with every claim, whatever handed the job out again (a Celery retry,
    an expired lease, a re-sent message), so a job that kills its worker ends too.
    """
    return job.attempts > max_attempts


def settle_exhausted(engine: Engine, job: Job) -> str:
    """Fail a job past its attempts cap, and the jobs that waited for it."""
    finish_job(engine, job.id, JobState.FAILED, error=exhausted_message(job))
    fail_dependents(engine, job.id)
    return JobState.FAILED


def settle_unexpected(
    engine: Engine, job: Job, err: BaseException, *, max_unexpected: int, to_queue: bool
) -> str:
    """End or hand back a job that raised an error of no known kind.

    Such an error is most often the job's own (a bug, an answer the database refuses), so it
    is retried only a few times, then the job fails with the error and its run goes on.
    ``to_queue``: handed back as a queued retry (a Celery task retries it) rather than to
    pending (a rating chunk its profile job ran: the coordinator sends it).
    """
    message = describe_unexpected(err)
    if job.attempts >= max_unexpected:
        finish_job(
            engine, job.id, JobState.FAILED, error=f"{message} (after {job.attempts} attempts)"
        )
        fail_dependents(engine, job.id)
        return JobState.FAILED
    if to_queue:
        requeue_job(engine, job.id, error=message, due_in_s=5.0 * job.attempts)
    else:
        release_job(engine, job.id, error=message)
    return "retry"
