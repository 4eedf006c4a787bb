"""Lost-message detection: which queued jobs are sent again, when, and only once."""

from __future__ import annotations

import io
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from rich.console import Console
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from coordinator.dispatch import BROKER_ERRORS
from coordinator.follow import _Dispatcher
from coordinator.lost import lost_job_ids, resend_lost
from lusifer.core.settings import Settings
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.jobs import claim_job, finish_job, requeue_job
from lusifer.store.tables import Job, JobState, utcnow

GRACE_S = 30.0


def _job(index: int, state: str) -> dict[str, object]:
    return {
        "id": f"r/u1/{index}/rating/0",
        "run_id": "r",
        "fold": "u1",
        "user_id": index,
        "kind": "rating",
        "state": state,
        "inputs_json": "{}",
    }


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'lost.db'}")
    create_tables(engine)
    with session_scope(engine) as session:
        upsert(
            session,
            Job,
            [
                *(_job(i, JobState.QUEUED) for i in range(3)),
                _job(3, JobState.RUNNING),
                _job(4, JobState.DONE),
                _job(5, JobState.PENDING),
            ],
            keys=["id"],
        )
    return engine


def _age(engine: Engine, index: int, seconds: float) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Job)
            .where(col(Job.id) == f"r/u1/{index}/rating/0")
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def _state(engine: Engine, index: int) -> str:
    with Session(engine) as session:
        job = session.get(Job, f"r/u1/{index}/rating/0")
        assert job is not None
        return job.state


class _Broker:
    """The broker's view of the queue, and what was sent to it."""

    def __init__(self, waiting: Collection[str] | None) -> None:
        self.waiting = waiting
        self.asked = 0

    def __call__(self, _app: Celery, _queue: str) -> Collection[str] | None:
        self.asked += 1
        return self.waiting


def _memory_app(name: str) -> Celery:
    return make_celery(Settings(queue=name), broker_url="memory://")


def _sent(app: Celery, queue: str) -> list[str]:
    ids = []
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue(queue)
        while True:
            try:
                message = q.get(block=False)
            except q.Empty:
                return ids
            ids.append(message.payload[0][0])
            message.ack()


def test_only_overdue_jobs_missing_from_the_broker_are_lost() -> None:
    assert lost_job_ids(["c", "a", "b"], waiting={"b"}) == ["a", "c"]
    assert lost_job_ids(["a"], waiting=set()) == ["a"]
    # A broker that cannot be read: no guess, no re-send.
    assert lost_job_ids(["a", "b"], waiting=None) == []


def test_a_lost_job_is_sent_again_once_per_grace_period(engine: Engine) -> None:
    app = _memory_app("lost-once")
    _age(engine, 0, 2 * GRACE_S)  # overdue, not in the broker: lost
    _age(engine, 1, 2 * GRACE_S)  # overdue but still waiting in the queue
    _age(engine, 3, 2 * GRACE_S)  # running: its lease, not this check, looks after it
    # job 2 was queued a moment ago: within the grace period
    broker = _Broker(waiting={"r/u1/1/rating/0"})
    assert resend_lost(engine, app, "r", "lost-once", GRACE_S, waiting=broker) == 1
    assert _sent(app, "lost-once") == ["r/u1/0/rating/0"]
    # Sent again just now: the next sweeps leave it alone until another grace period passes.
    assert resend_lost(engine, app, "r", "lost-once", GRACE_S, waiting=broker) == 0
    assert _sent(app, "lost-once") == []
    assert {_state(engine, i) for i in (0, 1, 2)} == {JobState.QUEUED}
    assert _state(engine, 3) == JobState.RUNNING


def test_nothing_overdue_costs_no_broker_round_trip(engine: Engine) -> None:
    broker = _Broker(waiting=set())
    assert resend_lost(engine, _memory_app("quiet"), "r", "quiet", GRACE_S, waiting=broker) == 0
    assert broker.asked == 0


def test_a_retry_held_back_by_a_countdown_is_not_lost_before_it_is_due(engine: Engine) -> None:
    app = _memory_app("countdown")
    job = claim_job(engine, "r/u1/5/rating/0", lease_s=60)
    assert job is not None
    # A worker holds its retry for 10 minutes: the job is queued with no message waiting.
    requeue_job(engine, job.id, "429", due_in_s=600)
    assert resend_lost(engine, app, "r", "countdown", GRACE_S, waiting=_Broker(set())) == 0
    _age(engine, 5, GRACE_S + 1)  # the countdown and the grace period have passed
    assert resend_lost(engine, app, "r", "countdown", GRACE_S, waiting=_Broker(set())) == 1


def test_a_broker_that_cannot_be_read_sends_nothing(engine: Engine) -> None:
    _age(engine, 0, 2 * GRACE_S)
    app = _memory_app("unreadable")
    assert resend_lost(engine, app, "r", "unreadable", GRACE_S, waiting=_Broker(None)) == 0


def test_jobs_the_broker_would_not_take_go_back_to_pending(engine: Engine) -> None:
    _age(engine, 0, 2 * GRACE_S)
    down = make_celery(Settings(queue="down"), broker_url="redis://127.0.0.1:1/0")
    with pytest.raises(BROKER_ERRORS):
        resend_lost(engine, down, "r", "down", GRACE_S, waiting=_Broker(set()))
    # Not left queued without a message: the next sweep sends it as a ready job.
    assert _state(engine, 0) == JobState.PENDING


def test_the_follow_loop_rides_out_a_broker_outage(engine: Engine) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    down = make_celery(Settings(queue="outage"), broker_url="redis://127.0.0.1:1/0")
    dispatcher = _Dispatcher(engine, down, "r", "outage", console, GRACE_S)
    dispatcher.tick()
    dispatcher.tick()
    assert out.getvalue().count("broker unreachable") == 1
    assert _state(engine, 5) == JobState.PENDING  # the ready job waits for the broker
    dispatcher.app = _memory_app("outage")
    dispatcher.tick()
    assert "broker reachable again" in out.getvalue()
    assert _state(engine, 5) == JobState.QUEUED
    assert _sent(dispatcher.app, "outage") == ["r/u1/5/rating/0"]


def test_recovery_is_announced_only_when_the_broker_answers(engine: Engine) -> None:
    out = io.StringIO()
    down = make_celery(Settings(queue="quiet-outage"), broker_url="redis://127.0.0.1:1/0")
    dispatcher = _Dispatcher(engine, down, "r", "quiet-outage", Console(file=out), GRACE_S)
    dispatcher.tick()
    assert "broker unreachable" in out.getvalue()
    finish_job(engine, "r/u1/5/rating/0", JobState.DONE)
    dispatcher.tick()  # nothing to send: the broker must still be asked
    assert "reachable again" not in out.getvalue()
    dispatcher.app = _memory_app("quiet-outage")
    dispatcher.tick()
    assert "reachable again" in out.getvalue()
