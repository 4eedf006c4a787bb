"""Finding queued jobs whose messages the broker lost, and sending them again.

A job is taken for lost only when all of these hold, so that a healthy backlog is never sent
twice and a broker outage causes no storm of re-sends:

- the database says it is queued and nobody claimed it for longer than the grace period
  (counted from when its message was due: a retry held back by a countdown is not late);
- its id is not among the messages waiting in the broker's queue;
- a conditional UPDATE moves it (queued and still untouched since the cutoff), so two
  coordinators, or a coordinator and a worker, never both send it.

Sending a job whose message was in fact alive (taken by a worker a moment before) is harmless:
jobs are idempotent and a claim holds a lease, so the duplicate is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine

from coordinator.dispatch import take_and_send, waiting_job_ids
from lusifer.store.jobs import queued_since
from lusifer.store.tables import JobState, utcnow


def lost_job_ids(overdue: Collection[str], waiting: Collection[str] | None) -> list[str]:
    """Overdue queued jobs the broker does not hold; none when the broker cannot be read."""
    if waiting is None:
        # Without a view of the queue a re-send could duplicate a whole backlog: leave it
        # to `lusifer resume`, which sends every unfinished job once.
        return []
    held = set(waiting)
    return sorted(job_id for job_id in overdue if job_id not in held)


def resend_lost(
    engine: Engine,
    app: Celery,
    run_id: str,
    queue: str,
    grace_s: float,
    *,
    waiting: Callable[[Celery, str], Collection[str] | None] = waiting_job_ids,
) -> int:
    """Send again the queued jobs of a run whose messages are gone; return how many.

    Raises one of ``coordinator.dispatch.BROKER_ERRORS`` when the broker is unreachable.
    """
    cutoff = utcnow() - timedelta(seconds=grace_s)
    overdue = queued_since(engine, run_id, cutoff)
    if not overdue:
        return 0  # the common case costs one indexed query and no broker round trip
    lost = lost_job_ids(overdue, waiting(app, queue))
    if not lost:
        return 0
    return take_and_send(engine, app, lost, queue, [JobState.QUEUED], updated_before=cutoff)
