"""The Celery application object and task names, shared by coordinator and workers.

The coordinator sends tasks by *name*, so it never imports the worker code.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery import Celery

from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings
from lusifer.store.tables import JobKind

PROFILE_TASK = "lusifer.profile"
RATING_TASK = "lusifer.rate"
# Fit one collaborative-filtering baseline on a stored fold split
# (``lusifer.evaluate.baseline_jobs``).
BASELINE_TASK = "lusifer.baseline"
TASK_BY_KIND: dict[str, str] = {
    JobKind.PROFILE: PROFILE_TASK,
    JobKind.RATING: RATING_TASK,
    JobKind.BASELINE: BASELINE_TASK,
}
# A reset or step of a simulated-user environment episode (``lusifer.env``).
ENV_STEP_TASK = "lusifer.env_step"

# The contract between coordinator and workers beyond the task names: ids-only arguments,
# the tables, the run context and the templates' variables and filters. Bumped when a change
# on one side would break the other; every message carries it, and a worker refuses (with
# one line, on the job) a message of another protocol rather than run it wrongly.
PROTOCOL = 1
PROTOCOL_HEADER = "lusifer_protocol"
REFUSED = "refused by a worker of protocol"


def message_headers() -> dict[str, int]:
    """The headers every Lusifer message carries."""
    return {PROTOCOL_HEADER: PROTOCOL}


def protocol_mismatch(value: object) -> str | None:
    """Why this worker refuses a message of protocol ``value``; None when it may run it.

    A message without the header (sent by hand, or by a coordinator that predates it) runs.
    """
    if value is None or value == PROTOCOL:
        return None
    return (
        f"{REFUSED} {PROTOCOL} (the coordinator speaks {value}): run workers and the "
        "coordinator of the same Lusifer version"
    )


# TLS options a rediss:// broker URL may carry as query parameters, as redis-py names them.
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def split_tls_options(url: str) -> tuple[str, dict[str, Any] | None]:
    """Take the TLS options out of a broker URL: the URL without them, and redis-py's options.

    ``rediss://:password@host:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required`` gives
    TLS that checks the server against that CA; ``ssl_certfile``/``ssl_keyfile`` add a client
    certificate. Without options a rediss:// URL checks the server against the system CAs.
    A redis:// URL gets no TLS (None).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = {key: value for key, value in query if key.startswith("ssl_")}
    kept = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in tls])))
    if parts.scheme != "rediss":
        if tls:
            raise ConfigurationError(
                f"the broker URL has TLS options ({', '.join(tls)}) but is not rediss://; "
                "use rediss:// in LUSIFER_BROKER_URL"
            )
        return url, None
    unknown = sorted(set(tls) - {"ssl_cert_reqs", *_TLS_FILES})
    if unknown:
        raise ConfigurationError(
            f"unknown TLS option {', '.join(unknown)} in the broker URL; LUSIFER_BROKER_URL "
            f"may carry ssl_cert_reqs, {', '.join(_TLS_FILES)}"
        )
    # Celery's own spelling (CERT_REQUIRED) and redis-py's (required) both work.
    reqs = tls.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in _CERT_REQS:
        raise ConfigurationError(
            f"ssl_cert_reqs={tls['ssl_cert_reqs']} in the broker URL is not one of "
            "required, optional, none; fix LUSIFER_BROKER_URL"
        )
    options: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[reqs]}
    for key in _TLS_FILES:
        if key in tls:
            if not Path(tls[key]).is_file():
                raise ConfigurationError(
                    f"{key}={tls[key]} in the broker URL is not a file; fix LUSIFER_BROKER_URL"
                )
            options[key] = tls[key]
    return kept, options


def make_celery(settings: Settings, broker_url: str | None = None) -> Celery:
    """A Celery app configured for at-least-once delivery of idempotent jobs."""
    broker, tls = split_tls_options(broker_url or settings.broker_url or "")
    app = Celery("lusifer", broker=broker or None, set_as_current=False)
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
        # Task events (job ids only) let Flower follow every job from the first. They cost
        # every job a few Redis publishes (about 5 % of a worker's CPU): LUSIFER_TASK_EVENTS=0
        # turns them off where nobody watches (the benchmarks do).
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
    )
    if tls is not None:
        app.conf.broker_use_ssl = tls
    return app


class JobRef(Protocol):
    """What a job's message needs of it (a ``Job``, or a row just moved to queued)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...


def send_jobs(app: Celery, jobs: Sequence[JobRef], queue: str) -> None:
    """Send job ids to the queue, by task name."""
    with app.producer_or_acquire() as producer:
        for job in jobs:
            app.send_task(
                TASK_BY_KIND[job.kind],
                args=[job.id],
                queue=queue,
                producer=producer,
                headers=message_headers(),
            )


def send_env_requests(app: Celery, request_ids: Sequence[str], queue: str) -> None:
    """Send environment step request ids to the queue, by task name."""
    with app.producer_or_acquire() as producer:
        for rid in request_ids:
            app.send_task(
                ENV_STEP_TASK, args=[rid], queue=queue, producer=producer, headers=message_headers()
            )
