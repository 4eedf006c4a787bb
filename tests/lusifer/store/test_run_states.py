"""A run's counts and ready jobs as the database keeps them (migration 0006), on SQLite and
PostgreSQL: after every kind of transition they equal what counting the job table says."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text, update
from sqlmodel import col

from lusifer.execute.async_jobs import finish_and_take_followups_async
from lusifer.store.async_db import open_database
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.jobs import (
    claim_job,
    finish_job,
    release_job,
    release_stale,
    requeue_job,
    take_for_queue,
)
from lusifer.store.migrate import alembic_config
from lusifer.store.run_states import job_counts, ready_job_ids, reset_unfinished
from lusifer.store.tables import Job, JobState, utcnow
from tests.integration.services import postgres_schema

USERS = (1, 2, 3)


def _profile(user: int) -> str:
    return f"r/f/{user}/profile"


def _rating(user: int, chunk: int) -> str:
    return f"r/f/{user}/rating/{chunk}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = get_engine(f"sqlite:///{tmp_path / 'states.db'}")
        create_tables(engine)
        yield engine
        return
    with postgres_schema("lusifer_states") as url:
        engine = get_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


def _job(
    job_id: str, user: int, kind: str, chunk: int, depends_on: str | None
) -> dict[str, object]:
    return {
        "id": job_id,
        "run_id": "r",
        "fold": "f",
        "user_id": user,
        "kind": kind,
        "chunk": chunk,
        "state": JobState.PENDING,
        "depends_on": depends_on,
        "waiting": depends_on is not None,
        "inputs_json": "{}",
    }


def _plan(engine: Engine) -> None:
    rows = []
    for user in USERS:
        rows.append(_job(_profile(user), user, "profile", 0, None))
        rows += [_job(_rating(user, c), user, "rating", c, _profile(user)) for c in range(2)]
    # Another run's jobs must never show in this run's figures.
    rows.append({**_job("other/f/1/profile", 1, "profile", 0, None), "run_id": "other"})
    with session_scope(engine) as session:
        upsert(session, Job, rows, keys=["id"])


def _truth(engine: Engine) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, state, count(*) FROM job WHERE run_id = 'r' GROUP BY kind, state")
        ).all()
    truth: dict[str, dict[str, int]] = {}
    for kind, state, n in rows:
        truth.setdefault(kind, {})[state] = int(n)
    return truth


def _counts(engine: Engine) -> dict[str, dict[str, int]]:
    return {kind: dict(states) for kind, states in job_counts(engine, "r").items()}


def test_counts_and_readiness_follow_every_transition(engine: Engine) -> None:
    _plan(engine)
    assert (
        _counts(engine) == _truth(engine) == {"profile": {"pending": 3}, "rating": {"pending": 6}}
    )
    # Rating jobs wait for their profile; profiles are ready.
    assert ready_job_ids(engine, "r") == [_profile(u) for u in USERS]

    take_for_queue(engine, [_profile(u) for u in USERS], [JobState.PENDING])
    assert claim_job(engine, _profile(1), lease_s=60) is not None
    assert claim_job(engine, _profile(2), lease_s=60) is not None
    assert _counts(engine) == _truth(engine)
    assert ready_job_ids(engine, "r") == []

    # A profile that ends through the blocking path makes its ratings ready...
    finish_job(engine, _profile(1), JobState.DONE)
    assert ready_job_ids(engine, "r") == [_rating(1, 0), _rating(1, 1)]
    # ...one that ends through the workers' loop takes them at once.
    taken = asyncio.run(
        finish_and_take_followups_async(open_database(engine, 1), _profile(2), reasks=0)
    )
    assert [job.id for job in taken] == [_rating(2, 0), _rating(2, 1)]
    assert _counts(engine) == _truth(engine)

    # A rating handed back (transient failure) is ready again; one re-queued with a delay is
    # queued; one whose worker died is pending again after its lease.
    release_job(engine, _rating(2, 0), "timeout")
    requeue_job(engine, _rating(2, 1), "429", due_in_s=5)
    assert ready_job_ids(engine, "r") == [_rating(1, 0), _rating(1, 1), _rating(2, 0)]
    assert claim_job(engine, _rating(1, 0), lease_s=60) is not None
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(col(Job.id) == _rating(1, 0))
            .values(updated_at=utcnow() - timedelta(seconds=120))
        )
    assert release_stale(engine, "r", lease_s=60) == 1
    assert _counts(engine) == _truth(engine)

    # A failed profile leaves its ratings waiting, through a resume too.
    assert claim_job(engine, _profile(3), lease_s=60) is not None
    finish_job(engine, _profile(3), JobState.FAILED, error="bad answer")
    assert _rating(3, 0) not in ready_job_ids(engine, "r")
    reset_unfinished(engine, "r", include_running=True)
    assert _counts(engine) == _truth(engine)
    assert _rating(3, 0) not in ready_job_ids(engine, "r")
    assert _profile(3) in ready_job_ids(engine, "r")

    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.run_id) == "r").values(state=JobState.DONE))
    assert _counts(engine) == _truth(engine) == {"profile": {"done": 3}, "rating": {"done": 6}}
    assert ready_job_ids(engine, "r") == []


def test_counts_read_the_tally_not_the_jobs(engine: Engine) -> None:
    _plan(engine)
    job_counts(engine, "r")  # folds the plan's changes into the tally
    with engine.begin() as conn:
        deltas = conn.execute(text("SELECT count(*) FROM jobtallydelta WHERE run_id = 'r'"))
        assert deltas.scalar() == 0
        # A tally that disagrees with the jobs shows: the counts come from it alone.
        conn.execute(text("UPDATE jobtally SET n = n + 100 WHERE run_id = 'r' AND kind = 'rating'"))
    assert _counts(engine)["rating"] == {"pending": 106}


def test_an_upgrade_fills_readiness_and_tally_from_the_jobs_already_there(
    engine: Engine,
) -> None:
    _plan(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    # Jobs of a run from before 0006: a done profile, a failed one, one still pending.
    finish_job(engine, _profile(1), JobState.DONE)
    finish_job(engine, _profile(2), JobState.FAILED, error="bad answer")

    create_tables(engine)

    assert _counts(engine) == _truth(engine)
    assert ready_job_ids(engine, "r") == [_profile(3), _rating(1, 0), _rating(1, 1)]
