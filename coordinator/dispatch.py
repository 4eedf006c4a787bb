"""Handing jobs to the broker, and seeing which ones it still holds.

The database says a job is queued; only the broker knows whether its message still exists. A
Redis restarted without persistence, a worker killed with messages it had prefetched, or a
process killed between marking jobs queued and sending them all leave queued jobs with no
message. ``waiting_job_ids`` lets the coordinator tell those apart from jobs that are merely
waiting their turn.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from sqlalchemy import Engine

from coordinator.publish import publish_jobs
from lusifer.queue import TASK_BY_KIND
from lusifer.store.jobs import return_to_pending, take_for_queue

# What a broker that is down or restarting raises, through kombu or redis-py directly.
BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, RedisError, OSError)
_PAGE = 1000


def take_and_send(
    engine: Engine,
    app: Celery,
    job_ids: Sequence[str],
    queue: str,
    from_states: Sequence[str],
    *,
    updated_before: datetime | None = None,
) -> int:
    """Mark jobs queued and send their ids; return how many this caller sent.

    When the broker cannot take them the jobs go back to pending (a later sweep sends them) and
    the broker's error is raised: no job is left queued for a message that was never sent.
    """
    taken = take_for_queue(engine, job_ids, from_states, updated_before=updated_before)
    if not taken:
        return 0
    try:
        publish_jobs(app, taken, queue)
    except BROKER_ERRORS:
        # Some may have been sent before the failure; sending those again later is harmless.
        return_to_pending(engine, [job.id for job in taken])
        raise
    return len(taken)


def ping_broker(app: Celery) -> None:
    """Connect to the broker once; raise one of ``BROKER_ERRORS`` when it is unreachable."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)


# Celery writes a task's arguments into its headers too (``argsrepr``): for a Lusifer job,
# the list of its one id. Reading that with a regular expression costs a microsecond; parsing
# the message and its base64 body twice cost 17-19 (5 s per check of a 300k backlog).
_TASK = re.compile(rb'"task":\s*"([^"\\]*)"')
_JOB_TASKS = {task.encode() for task in TASK_BY_KIND.values()}
_ARGSREPR = re.compile(rb'"argsrepr":\s*"\[\'([^\'"\\]+)\'\]"')


def job_id_of(raw: bytes | str) -> str | None:
    """The job id a raw Redis queue entry carries, or None if it is no Lusifer job message."""
    data = raw.encode() if isinstance(raw, str) else raw
    task = _TASK.search(data)
    if task is not None and task.group(1) not in _JOB_TASKS:
        return None  # another task's message (an environment step): no need to parse it
    found = _ARGSREPR.search(data) if task is not None else None
    return found.group(1).decode() if found else _parsed_job_id(raw)


def _parsed_job_id(raw: bytes | str) -> str | None:
    # Ids the expression does not take (quotes, backslashes), and messages of other shapes.
    try:
        message: Any = json.loads(raw)
        task = message.get("headers", {}).get("task")
        if task not in TASK_BY_KIND.values():
            return None
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return args[0] if args and isinstance(args[0], str) else None


def _queue_keys(channel: Any, queue: str) -> Iterator[str]:
    # kombu's Redis transport spreads a queue over one list per priority step.
    steps = getattr(channel, "priority_steps", [0])
    seen: set[str] = set()
    for step in steps:
        key = channel._q_for_pri(queue, step) if hasattr(channel, "_q_for_pri") else queue
        if key not in seen:
            seen.add(key)
            yield key


def waiting_job_ids(app: Celery, queue: str) -> set[str] | None:
    """Ids of the job messages waiting in ``queue``; None when the broker is not Redis.

    Messages a worker has taken (being run, or held for a retry countdown) are not included:
    their jobs are claimed (running) or due later (see ``lusifer.store.jobs.requeue_job``).
    Raises one of ``BROKER_ERRORS`` when the broker is unreachable.
    """
    found: set[str] = set()
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=5)
        channel = conn.default_channel
        client = getattr(channel, "client", None)
        if client is None or not hasattr(client, "lrange"):
            return None
        for key in _queue_keys(channel, queue):
            start = 0
            while True:
                page = client.lrange(key, start, start + _PAGE - 1)
                found.update(job_id for raw in page if (job_id := job_id_of(raw)) is not None)
                if len(page) < _PAGE:
                    break
                start += _PAGE
    return found
