"""Sending many job ids to a Redis broker in pipelined batches.

Celery's ``send_task`` builds, routes and pushes one message per call: 0.6-0.7 ms each, three
minutes for the 302k profile jobs of a large run's first enqueue. Here Celery builds one real
message per task name (through a capture of kombu's final push), and every job's message is
that message with its own ids, pushed with ``LPUSH`` in pipelines of a thousand.

The template is checked, not assumed: two messages are captured per task name, and unless
they differ only where a job's message must (task id, delivery tag, arguments), every job is
sent one by one through Celery as before. Brokers other than Redis are sent one by one too.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery

from lusifer.queue import TASK_BY_KIND, JobRef, message_headers, send_jobs

BATCH = 1000
# Smaller sends (a worker's follow-ups, a sweep's few jobs) gain nothing from a template.
MIN_BULK = 64
# Where two messages of one task may differ; anything else means the template cannot be used.
_PER_MESSAGE = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "argsrepr"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("body",),
}


def _differences(a: Any, b: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            yield from _differences(a.get(key), b.get(key), (*path, str(key)))
    elif a != b:
        yield path


@contextmanager
def _captured(channel: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Messages kombu would push, kept instead of pushed (its Redis channel's ``_put``)."""
    caught: list[tuple[str, dict[str, Any]]] = []
    original = channel._put
    channel._put = lambda queue, message, **_: caught.append((queue, message))
    try:
        yield caught
    finally:
        channel._put = original


class _Template:
    """One task's message as JSON text with holes where each job's own values go.

    The message is serialised once; a job's message is the text around the holes joined with
    its values, JSON-encoded. Serialising the whole message for each job cost most of the
    time of sending it.
    """

    def __init__(self, key: str, message: dict[str, Any]) -> None:
        self.key = key
        holes = copy.deepcopy(message)
        holes["headers"].update(id=_hole("ID"), root_id=_hole("ID"), argsrepr=_hole("ARGS"))
        holes["properties"].update(correlation_id=_hole("ID"), delivery_tag=_hole("TAG"))
        holes["body"] = _hole("BODY")
        # Text, names, text, names, ... text: odd places are holes.
        self.parts = _HOLE.split(json.dumps(holes))
        self.body_tail = json.dumps(json.loads(base64.b64decode(message["body"]))[1:])[1:]

    def stamped(self, job_id: str) -> str:
        """The JSON of the message that sends ``job_id``."""
        task_id = json.dumps(str(uuid.uuid4()))
        body = f"[[{json.dumps(job_id)}], {self.body_tail}"
        values = {
            "ID": task_id,
            "TAG": json.dumps(str(uuid.uuid4())),
            "ARGS": json.dumps(repr([job_id])),
            "BODY": json.dumps(base64.b64encode(body.encode()).decode()),
        }
        parts = self.parts
        return "".join(values[part] if place % 2 else part for place, part in enumerate(parts))


_HOLE = re.compile(r'"@@([A-Z]+)@@"')


def _hole(name: str) -> str:
    return f"@@{name}@@"


def _templates(app: Celery, producer: Any, queue: str, kinds: set[str]) -> dict[str, _Template]:
    """A checked template per kind; empty when any kind's messages cannot be templated."""
    channel = producer.channel
    if not hasattr(channel, "_q_for_pri") or not hasattr(channel, "client"):
        return {}
    templates: dict[str, _Template] = {}
    # The probes are never pushed: no "task sent" event may announce them either.
    sent_events = app.conf.task_send_sent_event
    app.conf.task_send_sent_event = False
    try:
        for kind in kinds:
            template = _template(app, producer, queue, kind)
            if template is None:
                return {}
            templates[kind] = template
    finally:
        app.conf.task_send_sent_event = sent_events
    return templates


def _template(app: Celery, producer: Any, queue: str, kind: str) -> _Template | None:
    channel = producer.channel
    with _captured(channel) as caught:
        for probe in ("probe-a", "probe-b"):
            app.send_task(
                TASK_BY_KIND[kind],
                args=[probe],
                queue=queue,
                producer=producer,
                headers=message_headers(),
            )
    if len(caught) != 2 or caught[0][0] != caught[1][0]:
        return None  # routed to several queues, or not at all: leave it to Celery
    (target, first), (_, second) = caught
    if not set(_differences(first, second)) <= _PER_MESSAGE:
        return None
    priority = channel._get_message_priority(first, reverse=False)
    return _Template(channel._q_for_pri(target, priority), first)


def publish_jobs(app: Celery, jobs: Sequence[JobRef], queue: str) -> None:
    """Send job ids to the queue: pipelined on Redis, one by one elsewhere or for a few."""
    if len(jobs) < MIN_BULK:
        send_jobs(app, jobs, queue)
        return
    with app.producer_or_acquire() as producer:
        templates = _templates(app, producer, queue, {job.kind for job in jobs})
        if not templates:
            send_jobs(app, jobs, queue)
            return
        client = producer.channel.client
        for start in range(0, len(jobs), BATCH):
            pipe = client.pipeline(transaction=False)
            for job in jobs[start : start + BATCH]:
                template = templates[job.kind]
                pipe.lpush(template.key, template.stamped(job.id))
            pipe.execute()
