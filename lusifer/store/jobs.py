"""Job state transitions, each one conditional UPDATE so concurrent workers cannot collide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Engine, and_, bindparam, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from lusifer.core.redaction import redact_optional
from lusifer.store.engines import autocommit, session_scope
from lusifer.store.tables import Job, JobState, Run, utcnow

# The raw answer of a failed job is stored to be read by a person: its head is enough.
MAX_RAW_OUTPUT_CHARS = 100_000


def claim_job(engine: Engine, job_id: str, lease_s: float) -> Job | None:
    """Mark a job running and return it, or None if it is finished, held, or unknown.

    A ``running`` job is claimed again only when its heartbeat is older than the lease: its
    worker died. A duplicate delivery of a job that is alive elsewhere is skipped, so no LLM
    call is paid twice.
    """
    claimed = claim_job_with_run_status(engine, job_id, lease_s)
    return None if claimed is None else claimed[0]


def _claim_statement() -> Any:
    # Built once: assembling this statement from ORM attributes cost more CPU than running it.
    job, run = Job.__table__, Run.__table__  # type: ignore[attr-defined]
    # Two comparisons, not IN: an IN list is expanded when the statement runs, and this one
    # is also compiled once for asyncpg (``lusifer.store.async_db``).
    claimable = or_(
        job.c.state == JobState.PENDING,
        job.c.state == JobState.QUEUED,
        and_(job.c.state == JobState.RUNNING, job.c.updated_at < bindparam("stale")),
    )
    run_status = sa_select(run.c.status).where(run.c.id == job.c.run_id).scalar_subquery()
    return (
        update(job)
        .where(job.c.id == bindparam("job_id"), claimable)
        .values(state=JobState.RUNNING, attempts=job.c.attempts + 1, updated_at=bindparam("now"))
        .returning(*job.c, run_status.label("run_status"))
    )


CLAIM = _claim_statement()


def claim_job_with_run_status(
    engine: Engine, job_id: str, lease_s: float
) -> tuple[Job, str | None] | None:
    """``claim_job``, also returning the status of the job's run, in one round trip."""
    with autocommit(engine).connect() as conn:
        row = conn.execute(CLAIM, claim_params(job_id, lease_s)).first()
    return None if row is None else claimed_job(row._mapping)


def claim_params(job_id: str, lease_s: float) -> dict[str, Any]:
    """The parameters of ``CLAIM``: a running job is taken over once its lease has passed."""
    now = utcnow()
    return {"job_id": job_id, "stale": now - timedelta(seconds=lease_s), "now": now}


def claimed_job(row: Mapping[Any, Any]) -> tuple[Job, str | None]:
    """The job ``CLAIM`` returned and its run's status."""
    fields = dict(row)
    status = fields.pop("run_status")
    return Job(**fields), status


def release_stale(engine: Engine, run_id: str, lease_s: float) -> int:
    """Put running jobs whose worker died (heartbeat older than the lease) back to pending."""
    stale = utcnow() - timedelta(seconds=lease_s)
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(
                col(Job.run_id) == run_id,
                col(Job.state) == JobState.RUNNING,
                col(Job.updated_at) < stale,
            )
            .values(state=JobState.PENDING, updated_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


FINISH = (
    update(Job.__table__)  # type: ignore[attr-defined]
    .where(Job.__table__.c.id == bindparam("job_id"))  # type: ignore[attr-defined]
    .values(
        state=bindparam("state"),
        error=bindparam("error"),
        raw_output=bindparam("raw_output"),
        reasks=bindparam("reasks"),
        updated_at=bindparam("now"),
    )
)


def finish_job(
    engine: Engine,
    job_id: str,
    state: str,
    *,
    error: str | None = None,
    raw_output: str | None = None,
    reasks: int = 0,
) -> None:
    """Record the end of a job (done or failed)."""
    with autocommit(engine).connect() as conn:
        conn.execute(FINISH, finish_params(job_id, state, error, raw_output, reasks))


def finish_params(
    job_id: str, state: str, error: str | None, raw_output: str | None, reasks: int
) -> dict[str, Any]:
    """The parameters of ``FINISH``."""
    return {
        "job_id": job_id,
        "state": state,
        "error": redact_optional(error),
        "raw_output": raw_output[:MAX_RAW_OUTPUT_CHARS] if raw_output else raw_output,
        "reasks": reasks,
        "now": utcnow(),
    }


def requeue_job(
    engine: Engine, job_id: str, error: str | None = None, *, due_in_s: float = 0.0
) -> None:
    """Put a running job back to queued (it will be retried in ``due_in_s`` seconds).

    A queued job's ``updated_at`` is when its message is due: a retry held back by a countdown
    is not taken for lost before its countdown has passed (see ``queued_since``).
    """
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == JobState.RUNNING)
            .values(
                state=JobState.QUEUED,
                error=redact_optional(error),
                updated_at=utcnow() + timedelta(seconds=due_in_s),
            )
        )


def release_job(engine: Engine, job_id: str, error: str | None = None) -> None:
    """Put a running job back to pending: nobody queues it until the coordinator does."""
    values: dict[str, Any] = {"state": JobState.PENDING, "updated_at": utcnow()}
    if error is not None:
        values["error"] = redact_optional(error)
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.state) == JobState.RUNNING)
            .values(**values)
        )


class QueuedJob(NamedTuple):
    """A job just moved to queued: what its message needs."""

    id: str
    kind: str


def take_for_queue(
    engine: Engine,
    job_ids: Sequence[str],
    from_states: Sequence[str],
    *,
    updated_before: datetime | None = None,
) -> list[QueuedJob]:
    """Move jobs from ``from_states`` to queued; return only those this caller moved.

    The conditional UPDATE ... RETURNING makes two callers (a worker handing on follow-ups and
    the coordinator's sweep) never send the same job twice. With ``updated_before`` only jobs
    untouched since then move: a lost job is sent again at most once per grace period.
    Plain rows come back, not ``Job`` objects: building one cost ~0.3 ms, a minute and a half
    for a large run's first 300k jobs.
    """
    job = Job.__table__  # type: ignore[attr-defined]
    taken: list[QueuedJob] = []
    with session_scope(engine) as session:
        for start in range(0, len(job_ids), 500):
            part = list(job_ids[start : start + 500])
            conditions: list[ColumnElement[bool]] = [
                job.c.id.in_(part),
                job.c.state.in_(list(from_states)),
            ]
            if updated_before is not None:
                conditions.append(job.c.updated_at < updated_before)
            rows = session.execute(
                update(job)
                .where(*conditions)
                .values(state=JobState.QUEUED, updated_at=utcnow())
                .returning(job.c.id, job.c.kind)
            ).all()
            taken.extend(QueuedJob(row[0], row[1]) for row in rows)
    return taken


def return_to_pending(engine: Engine, job_ids: Sequence[str]) -> int:
    """Put queued jobs whose messages could not be sent back to pending, to be sent later."""
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(col(Job.id).in_(list(job_ids)), col(Job.state) == JobState.QUEUED)
            .values(state=JobState.PENDING, updated_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def queued_since(engine: Engine, run_id: str, cutoff: datetime) -> list[str]:
    """Queued jobs of a run whose message was due before ``cutoff`` and that nobody claimed."""
    with Session(engine) as session:
        rows = session.exec(
            select(Job.id).where(
                Job.run_id == run_id, Job.state == JobState.QUEUED, col(Job.updated_at) < cutoff
            )
        ).all()
        return list(rows)


_job = Job.__table__  # type: ignore[attr-defined]
FINISH_DONE = (
    update(_job)
    .where(_job.c.id == bindparam("job_id"))
    .values(
        state=JobState.DONE,
        error=None,
        raw_output=None,
        reasks=bindparam("reasks"),
        updated_at=bindparam("now"),
    )
)
TAKE_FOLLOWUPS = (
    update(_job)
    .where(_job.c.depends_on == bindparam("job_id"), _job.c.state == JobState.PENDING)
    .values(state=JobState.RUNNING, attempts=_job.c.attempts + 1, updated_at=bindparam("now"))
    .returning(*_job.c)
)
# PostgreSQL: both in one statement, the finish as a data-modifying CTE (one round trip,
# atomic without a transaction around it).
FINISH_AND_TAKE_FOLLOWUPS = TAKE_FOLLOWUPS.add_cte(FINISH_DONE.cte("finished"))
STILL_HELD = (
    update(_job)
    .where(
        _job.c.id == bindparam("job_id"),
        _job.c.state == JobState.RUNNING,
        _job.c.attempts == bindparam("held_attempts"),
    )
    .values(updated_at=bindparam("now"))
    .returning(_job.c.id)
)


def followup_jobs(rows: Sequence[Mapping[Any, Any]]) -> list[Job]:
    """The jobs ``TAKE_FOLLOWUPS`` returned, in chunk order."""
    return sorted((Job(**row) for row in rows), key=lambda j: j.chunk)


def still_held_params(job: Job) -> dict[str, Any]:
    """The parameters of ``STILL_HELD`` for a job this worker holds."""
    return {"job_id": job.id, "held_attempts": job.attempts, "now": utcnow()}


def ready_followups(engine: Engine, job_id: str) -> list[str]:
    """Pending jobs that waited for ``job_id``."""
    with Session(engine) as session:
        rows = session.exec(
            select(Job.id).where(Job.depends_on == job_id, Job.state == JobState.PENDING)
        ).all()
        return list(rows)


def note_refusal(engine: Engine, job_id: str, reason: str) -> None:
    """Record on a job that waits why a worker would not run it (shown by the coordinator)."""
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(
                col(Job.id) == job_id,
                col(Job.state).in_([JobState.PENDING, JobState.QUEUED]),
            )
            .values(error=reason)
        )
