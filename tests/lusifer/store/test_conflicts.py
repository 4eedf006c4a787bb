"""A lost deadlock is run again: `resume`'s reset meets a worker finishing a job (real
PostgreSQL), and asyncpg's deadlock reaches the worker as a database error it hands back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lusifer.store import run_states
from lusifer.store.async_db import _as_operational_error
from lusifer.store.conflicts import is_conflict
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.run_states import reset_unfinished
from lusifer.store.tables import Job, JobState
from tests.integration.services import postgres_schema

PROFILE, RATING = "r/f/1/profile", "r/f/1/rating/0"


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_schema("lusifer_conflicts") as url:
        engine = get_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


def _jobs(engine: Engine) -> None:
    base = {"run_id": "r", "fold": "f", "user_id": 1, "inputs_json": "{}"}
    rows = [
        {**base, "id": PROFILE, "kind": "profile", "chunk": 0, "state": JobState.RUNNING},
        {
            **base,
            "id": RATING,
            "kind": "rating",
            "chunk": 0,
            "state": JobState.FAILED,
            "depends_on": PROFILE,
            "waiting": True,
        },
    ]
    # One statement at a time: the profile's row comes first in the table, so the reset
    # locks it before the rating's.
    for row in rows:
        with session_scope(engine) as session:
            upsert(session, Job, [row], keys=["id"])


def _wait_until_blocked_by(engine: Engine, holder: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": holder},
            ).scalar_one()
            conn.rollback()  # a fresh snapshot of the activity each round
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the reset never waited for the row the other transaction holds")


@pytest.mark.integration
def test_reset_that_loses_a_deadlock_runs_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _jobs(engine)
    attempts: list[int] = []

    def counting(engine: Engine) -> Any:
        attempts.append(1)
        return session_scope(engine)

    monkeypatch.setattr(run_states, "session_scope", counting)
    outcome: list[object] = []
    with engine.connect() as worker:
        tx = worker.begin()
        holder = int(worker.execute(text("SELECT pg_backend_pid()")).scalar_one())
        # A worker finishing the profile holds its row ...
        worker.execute(text("UPDATE job SET error = NULL WHERE id = :id"), {"id": PROFILE})
        reset = threading.Thread(
            target=lambda: outcome.append(reset_unfinished(engine, "r", include_running=True))
        )
        reset.start()
        # ... the reset (in index order: failed before running) took the rating's row and
        # waits for the profile's ...
        _wait_until_blocked_by(engine, holder)
        # ... and the profile becomes done: the readiness trigger wants the rating's row. The
        # reset waited first, so its deadlock check runs first and PostgreSQL aborts it.
        worker.execute(text("UPDATE job SET state = 'done' WHERE id = :id"), {"id": PROFILE})
        tx.commit()
    reset.join(30)
    assert not reset.is_alive()
    assert len(attempts) == 2  # the first attempt lost the deadlock, the second went through
    assert outcome == [1]  # the profile is done by then: only the failed rating is reset
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, state, waiting FROM job")).all()
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        PROFILE: (JobState.DONE, False),
        RATING: (JobState.PENDING, False),  # ready: the trigger's work was not lost
    }


def test_deadlocks_and_serialization_failures_are_conflicts() -> None:
    class Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert is_conflict(OperationalError("UPDATE", None, Orig("40P01")))
    assert is_conflict(OperationalError("UPDATE", None, Orig("40001")))
    assert not is_conflict(OperationalError("UPDATE", None, Orig("57P01")))  # shutdown
    assert not is_conflict(ValueError("no sqlstate"))


def test_asyncpg_deadlock_reaches_the_worker_as_a_database_error() -> None:
    with pytest.raises(OperationalError) as raised, _as_operational_error():
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    assert is_conflict(raised.value)
