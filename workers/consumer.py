"""A Celery consumer that reconnects when the broker goes away under unacknowledged messages."""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer

log = logging.getLogger("lusifer.worker")


# celery has no type hints: subclassing its Any is what mypy flags here.
class ResilientConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, minus one way of dying on a Redis restart.

    Celery 5.7 closes the broken connection when the broker is lost; kombu's Redis channel then
    tries to put its unacknowledged messages back through the connection that is gone and
    raises ``AttributeError``, which ends the worker ("Unrecoverable error"); the crash test met
    it once in six runs. Those messages stay in Redis (restored after the
    visibility timeout, or lost with a Redis that keeps nothing) and their jobs are covered by
    leases and the coordinator's lost-message check, so the worker reconnects instead.
    """

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        """Clean up after a lost connection; never let the clean-up end the worker."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as err:
            log.warning("broker connection lost while closing it (%r); reconnecting", err)
