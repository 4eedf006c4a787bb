"""A run's state as the jobs and the run row tell it: counts, readiness, and the run's status.

The database is the truth: the coordinator, ``status`` and ``resume`` all read a run's
progress from here, never from Celery results.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, literal, or_, update
from sqlmodel import Session, col, select

from lusifer.core.redaction import redact
from lusifer.store.conflicts import retry_conflicts
from lusifer.store.engines import session_scope
from lusifer.store.job_tally import fold_tally, tallied_counts
from lusifer.store.tables import Job, JobState, Run, RunStatus, utcnow


def job_counts(engine: Engine, run_id: str) -> dict[str, dict[str, int]]:
    """Number of jobs per kind and state, from the tally the database keeps (``job_tally``)."""
    fold_tally(engine, run_id)
    return tallied_counts(engine, run_id)


def _ready(run_id: str, states: tuple[str, ...]) -> Any:
    """The readiness rule, written once: in one of ``states``, its dependency done or none.

    ``waiting`` is cleared by the database when the dependency becomes done (migration 0006),
    so the rule reads ready rows only (the partial index ``ix_job_ready`` for pending ones),
    never the run's done jobs. The states are written into the SQL, not bound: a prepared
    statement's generic plan cannot prove a bound ``state`` matches the partial index.
    """
    in_states = or_(*(col(Job.state) == literal(s, literal_execute=True) for s in states))
    return (col(Job.run_id) == run_id) & in_states & ~col(Job.waiting)


def ready_job_ids(
    engine: Engine, run_id: str, states: tuple[str, ...] = (JobState.PENDING,)
) -> list[str]:
    """Jobs in ``states`` (pending by default) whose dependency is done (or that have none)."""
    # Core rows, not the ORM's: a large run's first poll returns 300k ids.
    query = select(Job.id).where(_ready(run_id, states)).order_by(col(Job.kind), col(Job.id))
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def ready_jobs(engine: Engine, run_id: str, states: tuple[str, ...]) -> list[Job]:
    """``ready_job_ids`` as whole rows."""
    with Session(engine) as session:
        rows = session.exec(
            select(Job).where(_ready(run_id, states)).order_by(col(Job.kind), col(Job.id))
        ).all()
    return list(rows)


@retry_conflicts
def reset_unfinished(engine: Engine, run_id: str, *, include_running: bool) -> int:
    """Put queued and failed jobs of a run back to pending, for resume.

    Running jobs are included only when no worker can still hold them (local mode starts new
    workers); in a cluster they are left to their lease. A deadlock with a worker finishing a
    job (its trigger locks the dependents) is retried, not reported.
    """
    states = [JobState.QUEUED, JobState.FAILED] + ([JobState.RUNNING] if include_running else [])
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(col(Job.run_id) == run_id, col(Job.state).in_(states))
            .values(state=JobState.PENDING, error=None)
        )
        session.execute(
            update(Run).where(col(Run.id) == run_id).values(status=RunStatus.RUNNING, error=None)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def set_run_status(engine: Engine, run_id: str, status: str) -> None:
    """Record the status of a run, and when it finished if it did."""
    finished_at = utcnow() if status in RunStatus.ENDED else None
    with session_scope(engine) as session:
        session.execute(
            update(Run).where(col(Run.id) == run_id).values(status=status, finished_at=finished_at)
        )


def fail_run(engine: Engine, run_id: str, message: str) -> None:
    """Stop a run for a permanent reason; the coordinator reports ``message``."""
    with session_scope(engine) as session:
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(status=RunStatus.FAILED, error=redact(message), finished_at=utcnow())
        )


def run_status(engine: Engine, run_id: str) -> str | None:
    """The status of a run, or None when it does not exist."""
    with Session(engine) as session:
        run = session.get(Run, run_id)
        return None if run is None else run.status
