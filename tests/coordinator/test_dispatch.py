"""Reading back which job messages wait in a real Redis queue."""

from __future__ import annotations

import secrets

import pytest
import redis

from coordinator.dispatch import job_id_of, waiting_job_ids
from lusifer.core.settings import Settings
from lusifer.queue import make_celery, send_jobs
from lusifer.store.tables import Job, JobKind
from tests.integration.services import REDIS_DB


def _job(job_id: str, kind: str) -> Job:
    return Job(id=job_id, kind=kind, run_id="r", fold="u1", user_id=1, inputs_json="{}")


def test_entries_that_are_not_job_messages_carry_no_job_id() -> None:
    assert job_id_of(b"not json") is None
    assert job_id_of(b'{"headers": {"task": "celery.ping"}, "body": "W10="}') is None
    assert job_id_of(b'{"headers": {"task": "lusifer.rate"}, "body": "!!"}') is None


@pytest.mark.integration
def test_waiting_job_ids_are_read_from_the_queue_and_its_priority_lists() -> None:
    queue = f"view-{secrets.token_hex(4)}"
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    app = make_celery(Settings(broker_url=url, queue=queue))
    client = redis.Redis.from_url(url)
    try:
        jobs = [_job(f"r/u1/{i}/rating/0", JobKind.RATING) for i in range(1200)]
        jobs.append(_job("r/u1/1/profile", JobKind.PROFILE))
        send_jobs(app, jobs, queue)
        # A message with a priority lands in another list of the same queue.
        app.send_task("lusifer.rate", args=["r/u1/urgent/rating/0"], queue=queue, priority=9)
        client.lpush(queue, b"garbage")
        assert waiting_job_ids(app, queue) == {j.id for j in jobs} | {"r/u1/urgent/rating/0"}
        client.delete(queue)
        assert waiting_job_ids(app, queue) == {"r/u1/urgent/rating/0"}
    finally:
        client.delete(*client.keys(f"{queue}*"))
