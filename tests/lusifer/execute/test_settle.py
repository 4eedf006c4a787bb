"""How a job that did not simply succeed ends: bounded attempts, whatever re-delivers it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from lusifer.execute.settle import (
    fail_orphans,
    over_attempts,
    settle_exhausted,
    settle_unexpected,
)
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.jobs import claim_job
from lusifer.store.tables import Job, JobKind, JobState

PROFILE = "r/u1/1/profile"
RATINGS = [f"r/u1/1/rating/{i}" for i in range(2)]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'settle.db'}")
    create_tables(engine)
    rows = [
        {"id": PROFILE, "kind": JobKind.PROFILE, "chunk": 0, "depends_on": None},
        *(
            {"id": job_id, "kind": JobKind.RATING, "chunk": i, "depends_on": PROFILE}
            for i, job_id in enumerate(RATINGS)
        ),
    ]
    with session_scope(engine) as session:
        upsert(
            session,
            Job,
            [
                {
                    **row,
                    "run_id": "r",
                    "fold": "u1",
                    "user_id": 1,
                    "state": JobState.PENDING,
                    "inputs_json": "{}",
                }
                for row in rows
            ],
            keys=["id"],
        )
    return engine


def _job(engine: Engine, job_id: str) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_an_unexpected_error_is_retried_then_fails_the_job_and_its_dependents(
    engine: Engine,
) -> None:
    err = ValueError("A string literal cannot contain NUL (0x00) characters.")
    for attempt in (1, 2):
        job = claim_job(engine, PROFILE, lease_s=60)
        assert job is not None and job.attempts == attempt
        assert settle_unexpected(engine, job, err, max_unexpected=3, to_queue=True) == "retry"
        assert _job(engine, PROFILE).state == JobState.QUEUED
        assert "unexpected ValueError" in (_job(engine, PROFILE).error or "")
    job = claim_job(engine, PROFILE, lease_s=60)
    assert job is not None
    assert settle_unexpected(engine, job, err, max_unexpected=3, to_queue=True) == JobState.FAILED
    failed = _job(engine, PROFILE)
    assert failed.state == JobState.FAILED
    assert failed.error == (
        "unexpected ValueError: A string literal cannot contain NUL (0x00) characters. "
        "(after 3 attempts)"
    )
    for rating in RATINGS:
        dependent = _job(engine, rating)
        assert dependent.state == JobState.FAILED
        assert dependent.error == f"its profile job {PROFILE} failed"


def test_a_rating_chunk_is_handed_back_to_pending_not_to_the_queue(engine: Engine) -> None:
    job = claim_job(engine, RATINGS[0], lease_s=60)
    assert job is not None
    assert settle_unexpected(engine, job, KeyError("x"), max_unexpected=3, to_queue=False) == (
        "retry"
    )
    assert _job(engine, RATINGS[0]).state == JobState.PENDING


def test_a_job_handed_out_past_the_cap_fails_with_its_last_error(engine: Engine) -> None:
    # Each claim counts, whether a retry, an expired lease or a re-sent message brought it.
    for _ in range(3):
        job = claim_job(engine, PROFILE, lease_s=0)  # lease 0: every claim takes it over
        assert job is not None
    assert job.attempts == 3
    assert not over_attempts(job, 3)
    job = claim_job(engine, PROFILE, lease_s=0)
    assert job is not None and over_attempts(job, 3)
    assert settle_exhausted(engine, job) == JobState.FAILED
    failed = _job(engine, PROFILE)
    assert failed.state == JobState.FAILED
    assert failed.error is not None and failed.error.startswith("gave up after 3 attempts")
    assert {_job(engine, r).state for r in RATINGS} == {JobState.FAILED}


def test_orphans_of_a_failed_profile_fail_with_its_name(engine: Engine) -> None:
    job = claim_job(engine, PROFILE, lease_s=60)
    assert job is not None
    settle_exhausted(engine, job)
    fail_orphans(engine, "r")  # nothing left to fail: idempotent
    assert {_job(engine, r).error for r in RATINGS} == {f"its profile job {PROFILE} failed"}
