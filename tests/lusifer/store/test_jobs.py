"""Job state transitions on SQLite: claims, leases, queueing and release of orphans."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from lusifer.execute.async_jobs import finish_and_take_followups_async, still_held_async
from lusifer.store.async_db import open_database
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.jobs import (
    claim_job,
    finish_job,
    release_stale,
    take_for_queue,
)
from lusifer.store.tables import Job, JobState, utcnow


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    create_tables(engine)
    with session_scope(engine) as session:
        upsert(
            session,
            Job,
            [
                {
                    "id": f"r/f/1/rating/{i}",
                    "run_id": "r",
                    "fold": "f",
                    "user_id": 1,
                    "kind": "rating",
                    "chunk": i,
                    "state": JobState.PENDING,
                    "inputs_json": "{}",
                }
                for i in range(3)
            ],
            keys=["id"],
        )
    return engine


def _age(engine: Engine, job_id: str, seconds: float) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(col(Job.id) == job_id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def _state(engine: Engine, job_id: str) -> str:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state


def test_a_running_job_is_not_claimed_twice_until_its_lease_expires(engine: Engine) -> None:
    job_id = "r/f/1/rating/0"
    first = claim_job(engine, job_id, lease_s=60)
    assert first is not None and first.attempts == 1
    assert claim_job(engine, job_id, lease_s=60) is None  # a duplicate delivery
    _age(engine, job_id, 61)
    again = claim_job(engine, job_id, lease_s=60)  # its worker died
    assert again is not None and again.attempts == 2


def test_finished_jobs_are_never_claimed(engine: Engine) -> None:
    job_id = "r/f/1/rating/1"
    assert claim_job(engine, job_id, lease_s=60) is not None
    finish_job(engine, job_id, JobState.DONE)
    _age(engine, job_id, 3600)
    assert claim_job(engine, job_id, lease_s=60) is None
    assert claim_job(engine, "no/such/job", lease_s=60) is None


def test_take_for_queue_moves_each_job_once(engine: Engine) -> None:
    ids = [f"r/f/1/rating/{i}" for i in range(3)]
    first = take_for_queue(engine, ids, [JobState.PENDING])
    second = take_for_queue(engine, ids, [JobState.PENDING])
    assert sorted(j.id for j in first) == ids and second == []
    assert all(_state(engine, i) == JobState.QUEUED for i in ids)


def test_release_stale_returns_orphans_to_pending(engine: Engine) -> None:
    claim_job(engine, "r/f/1/rating/0", lease_s=60)
    claim_job(engine, "r/f/1/rating/1", lease_s=60)
    _age(engine, "r/f/1/rating/0", 120)
    assert release_stale(engine, "r", lease_s=60) == 1
    assert _state(engine, "r/f/1/rating/0") == JobState.PENDING
    assert _state(engine, "r/f/1/rating/1") == JobState.RUNNING


def _add_profile_job(engine: Engine) -> None:
    with session_scope(engine) as session:
        upsert(
            session,
            Job,
            [
                {
                    "id": "r/f/1/profile",
                    "run_id": "r",
                    "fold": "f",
                    "user_id": 1,
                    "kind": "profile",
                    "state": JobState.PENDING,
                    "inputs_json": "{}",
                }
            ],
            keys=["id"],
        )
        session.execute(
            update(Job).where(col(Job.kind) == "rating").values(depends_on="r/f/1/profile")
        )


def _finish_and_take(engine: Engine, job_id: str) -> list[Job]:
    # The workers' own (asyncio) path, on SQLite's threaded twin of the engine.
    return asyncio.run(finish_and_take_followups_async(open_database(engine, 1), job_id, reasks=2))


def _still_held(engine: Engine, job: Job) -> bool:
    return asyncio.run(still_held_async(open_database(engine, 1), job))


def test_a_finished_profile_job_takes_its_waiting_rating_jobs_once(engine: Engine) -> None:
    _add_profile_job(engine)
    assert claim_job(engine, "r/f/1/profile", lease_s=60) is not None
    # One rating job was already handed to the queue by the coordinator: not taken again.
    take_for_queue(engine, ["r/f/1/rating/1"], [JobState.PENDING])

    taken = _finish_and_take(engine, "r/f/1/profile")

    assert [job.id for job in taken] == ["r/f/1/rating/0", "r/f/1/rating/2"]
    assert all(job.state == JobState.RUNNING and job.attempts == 1 for job in taken)
    assert _state(engine, "r/f/1/profile") == JobState.DONE
    assert _state(engine, "r/f/1/rating/1") == JobState.QUEUED
    assert _finish_and_take(engine, "r/f/1/profile") == []


def test_a_job_handed_out_again_is_no_longer_held_by_its_first_holder(engine: Engine) -> None:
    first = claim_job(engine, "r/f/1/rating/0", lease_s=60)
    assert first is not None and _still_held(engine, first)
    _age(engine, "r/f/1/rating/0", 120)
    assert release_stale(engine, "r", lease_s=60) == 1
    second = claim_job(engine, "r/f/1/rating/0", lease_s=60)
    assert second is not None
    assert not _still_held(engine, first)
    assert _still_held(engine, second)
