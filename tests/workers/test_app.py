"""The worker's Celery app."""

from __future__ import annotations

from typing import Any

import pytest
from celery.worker.consumer import Consumer

from workers.consumer import ResilientConsumer


def test_a_worker_keeps_reconnecting_through_a_broker_outage() -> None:
    # With a bounded number of tries a worker exits ~12 s into a Redis restart or outage.
    from workers.app import app

    assert app.conf.broker_connection_max_retries is None
    assert app.conf.worker_consumer == "workers.consumer:ResilientConsumer"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost


def test_a_failing_clean_up_after_a_lost_connection_does_not_end_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def closing_a_gone_connection(self: Any, exc: BaseException) -> None:
        raise AttributeError("'NoneType' object has no attribute 'hostname'")

    monkeypatch.setattr(Consumer, "on_connection_error_after_connected", closing_a_gone_connection)
    consumer = ResilientConsumer.__new__(ResilientConsumer)
    consumer.on_connection_error_after_connected(ConnectionError("Connection closed by server."))
