"""The worker's Celery app."""

from __future__ import annotations


def test_a_worker_keeps_reconnecting_through_a_broker_outage() -> None:
    # With a bounded number of tries a worker exits ~12 s into a Redis restart or outage.
    from workers.app import app

    assert app.conf.broker_connection_max_retries is None
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
