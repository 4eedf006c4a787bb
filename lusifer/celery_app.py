"""The Celery application object and task names, shared by coordinator and workers.

The coordinator sends tasks by *name*, so it never imports the worker code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from lusifer.settings import Settings
from lusifer.tables import Job, JobKind

PROFILE_TASK = "lusifer.profile"
RATING_TASK = "lusifer.rate"
# Fit one collaborative-filtering baseline on a stored fold split (``lusifer.baseline_jobs``).
BASELINE_TASK = "lusifer.baseline"
TASK_BY_KIND = {
    JobKind.PROFILE: PROFILE_TASK,
    JobKind.RATING: RATING_TASK,
    JobKind.BASELINE: BASELINE_TASK,
}
# A reset or step of a simulated-user environment episode (``lusifer.env``).
ENV_STEP_TASK = "lusifer.env_step"


def make_celery(settings: Settings, broker_url: str | None = None) -> Celery:
    """A Celery app configured for at-least-once delivery of idempotent jobs."""
    broker = broker_url or settings.broker_url
    app = Celery("lusifer", broker=broker, set_as_current=False)
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        # A job is acknowledged only when it is finished; a killed worker's job is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        # Task events (job ids only) are off until a monitor asks: Flower turns them on in the
        # workers when it starts (its enable_events option, on by default). Always on, they
        # cost every job several Redis publishes that nobody reads (5 % of a worker's CPU).
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
    )
    if broker and broker.startswith("rediss://"):
        app.conf.broker_use_ssl = {"ssl_cert_reqs": "required"}
    return app


def send_jobs(app: Celery, jobs: Sequence[Job], queue: str) -> None:
    """Send job ids to the queue, by task name."""
    with app.producer_or_acquire() as producer:
        for job in jobs:
            app.send_task(TASK_BY_KIND[job.kind], args=[job.id], queue=queue, producer=producer)


def send_env_requests(app: Celery, request_ids: Sequence[str], queue: str) -> None:
    """Send environment step request ids to the queue, by task name."""
    with app.producer_or_acquire() as producer:
        for rid in request_ids:
            app.send_task(ENV_STEP_TASK, args=[rid], queue=queue, producer=producer)
