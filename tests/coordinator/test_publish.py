"""Pipelined publishing on a real Redis: the messages are Celery's own, restamped per job."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu.utils.json import loads

from coordinator.dispatch import _parsed_job_id, job_id_of, waiting_job_ids
from coordinator.publish import _PER_MESSAGE, MIN_BULK, _differences, publish_jobs
from lusifer.core.settings import Settings
from lusifer.queue import PROTOCOL, PROTOCOL_HEADER, make_celery, send_jobs
from lusifer.store.tables import Job, JobKind
from tests.integration.services import REDIS_DB

URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _job(job_id: str, kind: str) -> Job:
    return Job(id=job_id, kind=kind, run_id="r", fold="u1", user_id=1, inputs_json="{}")


@pytest.fixture
def queue() -> Iterator[tuple[Celery, str, redis.Redis]]:
    name = f"publish-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(URL)
    try:
        yield make_celery(Settings(broker_url=URL, queue=name)), name, client
    finally:
        keys = client.keys(f"{name}*")
        if keys:
            client.delete(*keys)


@pytest.mark.integration
def test_published_messages_are_read_back_by_kombu_as_the_jobs_sent(
    queue: tuple[Celery, str, redis.Redis],
) -> None:
    app, name, client = queue
    jobs = [_job(f"r/u1/{i}/profile", JobKind.PROFILE) for i in range(150)]
    jobs += [_job(f"r/u1/{i}/rating/0", JobKind.RATING) for i in range(150)]
    publish_jobs(app, jobs, name)
    assert client.llen(name) == len(jobs)  # the probes were never pushed
    received = []
    with app.connection_for_read() as conn, conn.SimpleQueue(name) as simple:
        for _ in jobs:
            message = simple.get(timeout=5)
            args, _kwargs, _embed = message.decode()
            received.append((message.headers["task"], args[0], message.headers[PROTOCOL_HEADER]))
            message.ack()
    assert received == [
        ("lusifer.profile" if j.kind == JobKind.PROFILE else "lusifer.rate", j.id, PROTOCOL)
        for j in jobs
    ]


@pytest.mark.integration
def test_a_published_message_differs_from_celerys_only_in_its_own_ids(
    queue: tuple[Celery, str, redis.Redis],
) -> None:
    app, name, client = queue
    send_jobs(app, [_job("r/u1/0/rating/0", JobKind.RATING)], name)
    publish_jobs(app, [_job(f"r/u1/{i}/rating/0", JobKind.RATING) for i in range(MIN_BULK)], name)
    celerys, *ours = [loads(raw) for raw in reversed(client.lrange(name, 0, -1))]
    assert set(_differences(celerys, ours[0])) <= _PER_MESSAGE
    assert len({m["headers"]["id"] for m in ours}) == MIN_BULK  # a task id of its own each
    assert waiting_job_ids(app, name) == {f"r/u1/{i}/rating/0" for i in range(MIN_BULK)}


@pytest.mark.integration
def test_the_quick_reading_of_a_message_agrees_with_parsing_it(
    queue: tuple[Celery, str, redis.Redis],
) -> None:
    app, name, client = queue
    odd = "r/u1/it's/rating/0"  # a quote: read by parsing the message instead
    send_jobs(app, [_job("r/u1/7/profile", JobKind.PROFILE), _job(odd, JobKind.RATING)], name)
    app.send_task("lusifer.env_step", args=["episode/1"], queue=name)
    raws = client.lrange(name, 0, -1)
    assert [job_id_of(raw) for raw in raws] == [_parsed_job_id(raw) for raw in raws]
    assert {job_id_of(raw) for raw in raws} == {"r/u1/7/profile", odd, None}
