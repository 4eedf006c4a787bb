"""Readiness and liveness of a worker, for Kubernetes exec probes.

``python -m workers.probe ready``: the broker answers PING, the database answers and its
schema is the one this code expects, and this worker (``celery@<hostname>``) answers a
control ping: it consumes from the broker. Any of them failing means the worker cannot move a
job, so it is not ready.

``python -m workers.probe alive``: this worker answers a control ping. A broker that cannot
be reached passes: that is no fault of this process (readiness reports it), and restarting
every worker during a broker outage would only add to it. What fails is a worker that the
broker reaches and that does not answer: its consumer is stuck.

Every check is bounded by ``--timeout``; exit 0 when it passes, 1 with one line otherwise.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from lusifer.core.settings import get_settings
from lusifer.queue import make_celery, split_tls_options
from lusifer.store.engines import redact_url
from lusifer.store.migrate import require_current_schema


class ProbeFailed(Exception):
    """A check that did not pass; the message says which and why."""


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def check_broker(url: str, timeout_s: float) -> None:
    """PING the broker's Redis once."""
    plain, tls = split_tls_options(url)
    client = redis.Redis.from_url(
        plain, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **(tls or {})
    )
    try:
        client.ping()
    except redis.RedisError as err:
        raise ProbeFailed(f"broker {redact_url(url)}: {_first_line(err)}") from None
    finally:
        client.close()


def check_database(url: str, timeout_s: float) -> None:
    """SELECT 1, and the schema at the revision this code expects."""
    args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        args["connect_timeout"] = max(2, round(timeout_s))
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SET statement_timeout = {int(timeout_s * 1000)}"))
            conn.execute(text("SELECT 1"))
            require_current_schema(conn, redact_url(url))
    except ProbeFailed:
        raise
    except Exception as err:  # driver errors and ServiceError of an older schema alike
        raise ProbeFailed(f"database {redact_url(url)}: {_first_line(err)}") from None
    finally:
        engine.dispose()


def worker_answers(node: str, timeout_s: float) -> bool | None:
    """Whether ``node`` answers a control ping; None when the broker cannot be asked."""
    app = make_celery(get_settings())
    app.conf.broker_connection_max_retries = 0
    try:
        replies = app.control.ping(destination=[node], timeout=timeout_s)
    except Exception:  # kombu's connection errors: the broker is away
        return None
    finally:
        app.close()
    return any(node in reply for reply in replies or [])


def ready(node: str, timeout_s: float) -> str:
    """Check broker, database and the worker; the line to print when all pass."""
    settings = get_settings()
    if not settings.broker_url or not settings.database_url:
        raise ProbeFailed("LUSIFER_BROKER_URL and LUSIFER_DATABASE_URL must both be set")
    check_broker(settings.broker_url, timeout_s)
    check_database(settings.database_url, timeout_s)
    if not worker_answers(node, timeout_s):
        raise ProbeFailed(f"worker {node} does not answer a ping through the broker")
    return f"ready: broker, database and worker {node} answer"


def alive(node: str, timeout_s: float) -> str:
    """Check the worker answers, unless the broker itself is away."""
    answered = worker_answers(node, timeout_s)
    if answered is None:
        return "alive: the broker cannot be reached, which is not this worker's fault"
    if not answered:
        raise ProbeFailed(f"worker {node} does not answer a ping; its consumer is stuck")
    return f"alive: worker {node} answers"


def main(argv: list[str] | None = None) -> int:
    """Run one probe; 0 when it passes, 1 with one line when it does not."""
    parser = argparse.ArgumentParser(description="Probe this Lusifer worker.")
    parser.add_argument("check", choices=["ready", "alive"])
    parser.add_argument("--node", default=f"celery@{socket.gethostname()}", help="worker name")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    args = parser.parse_args(argv)
    try:
        line = (ready if args.check == "ready" else alive)(args.node, args.timeout)
    except ProbeFailed as err:
        print(f"probe: not {args.check}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bad setting: one line, never a traceback in the pod events
        print(f"probe: not {args.check}: {_first_line(err)}", file=sys.stderr)
        return 1
    print(f"probe: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
