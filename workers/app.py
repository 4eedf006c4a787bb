"""The worker's Celery app: ``celery -A workers.app worker``."""

from __future__ import annotations

import logging

from lusifer.core.settings import get_settings
from lusifer.queue import make_celery
from workers.tasks import register_tasks

_settings = get_settings()
logging.basicConfig(level=_settings.log_level)
app = make_celery(_settings)
# A worker outlives a broker outage of any length (a Redis restart, a network cut): it keeps
# reconnecting instead of exiting after a few tries, and takes up the queue again afterwards.
app.conf.broker_connection_max_retries = None
app.conf.worker_consumer = "workers.consumer:ResilientConsumer"
register_tasks(app)
