"""Coordinator and workers speak one protocol: every message says which, and a worker of
another refuses it with one line on the job, handing it back rather than running it wrongly."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.app.task import Context
from sqlmodel import Session

from lusifer.core.settings import Settings, get_settings
from lusifer.queue import (
    PROTOCOL,
    PROTOCOL_HEADER,
    REFUSED,
    make_celery,
    protocol_mismatch,
    send_jobs,
)
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.tables import Job, JobState
from tests.integration.services import REDIS_DB
from workers.tasks import run_job


class _Retry(Exception):
    pass


class FakeTask:
    def __init__(self, **headers: Any) -> None:
        self.request = Context(retries=0, **headers)
        self.retried: list[dict[str, Any]] = []

    def retry(self, **kwargs: Any) -> _Retry:
        self.retried.append(kwargs)
        return _Retry()


def test_a_message_of_this_protocol_or_none_runs_another_is_refused() -> None:
    assert protocol_mismatch(PROTOCOL) is None
    assert protocol_mismatch(None) is None  # sent by hand, or by an older coordinator
    reason = protocol_mismatch(PROTOCOL + 1)
    assert reason is not None and reason.startswith(REFUSED) and "same Lusifer version" in reason


def test_a_worker_refuses_a_job_of_another_protocol_and_says_why_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("LUSIFER_DATABASE_URL", url)
    get_settings.cache_clear()
    engine = get_engine(url)
    create_tables(engine)
    row = {
        "id": "r/u1/1/profile",
        "run_id": "r",
        "fold": "u1",
        "user_id": 1,
        "kind": "profile",
        "chunk": 0,
        "state": JobState.QUEUED,
        "inputs_json": "{}",
    }
    with session_scope(engine) as session:
        upsert(session, Job, [row], keys=["id"])
    task = FakeTask(**{PROTOCOL_HEADER: PROTOCOL + 1})
    with pytest.raises(_Retry):
        run_job(task, "r/u1/1/profile")  # type: ignore[arg-type]
    # Handed back without a cap of Celery's: a worker of the right version may take it.
    assert task.retried == [{"countdown": 30.0, "max_retries": None}]
    with Session(engine) as session:
        job = session.get(Job, "r/u1/1/profile")
    assert job is not None and job.state == JobState.QUEUED and job.attempts == 0
    assert job.error is not None and job.error.startswith(REFUSED)
    get_settings.cache_clear()


@pytest.mark.integration
def test_every_job_message_carries_the_protocol() -> None:
    queue = f"protocol-{secrets.token_hex(4)}"
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    app = make_celery(Settings(broker_url=broker, queue=queue))
    send_jobs(
        app, [Job(id="r/u1/1/profile", run_id="r", fold="u1", user_id=1, kind="profile")], queue
    )
    client = redis.Redis.from_url(broker)
    try:
        raw = client.lpop(queue)
        assert raw is not None
        message = json.loads(raw)
        assert message["headers"][PROTOCOL_HEADER] == PROTOCOL
        assert message["headers"]["task"] == "lusifer.profile"
    finally:
        client.delete(queue)
