"""Wait until the broker and the database of this container answer, then exit 0.

Usage: ``python deploy/wait_for.py [--timeout S]``. Reads ``LUSIFER_BROKER_URL`` (redis:// or
rediss://: PING) and ``LUSIFER_DATABASE_URL`` (SQLAlchemy: SELECT 1) from the environment; an
unset variable is not waited for. On timeout it prints one line to stderr and exits 1. A bad URL
or wrong credentials fail at once: waiting cannot fix them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

POLL_INTERVAL_S = 0.5
ATTEMPT_TIMEOUT_S = 5.0
# Server answers no retry can fix. libpq reports them as text, without a SQLSTATE.
PERMANENT_DATABASE_ERRORS = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
)


class Permanent(Exception):
    """A failure that waiting cannot fix (bad URL, wrong password, unknown database)."""


class NotReady(Exception):
    """A service that does not answer yet; the message is the driver's first line."""


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def first_line(err: BaseException) -> str:
    """The first line of an error message, or the error's type name."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def ping_broker(url: str, timeout_s: float) -> None:
    """PING the Redis broker once."""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise Permanent("only redis:// and rediss:// brokers are supported")
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    except ValueError as err:
        raise Permanent(first_line(err)) from None
    try:
        client.ping()
    except redis.ResponseError as err:
        # The server answered with an error: a wrong password, a bad db number. (A Redis that
        # is still loading its data raises BusyLoadingError, a ConnectionError: retried.)
        raise Permanent(first_line(err)) from None
    except redis.RedisError as err:
        raise NotReady(first_line(err)) from None
    finally:
        client.close()


def ping_database(url: str, timeout_s: float) -> None:
    """Connect to the database once and run SELECT 1."""
    try:
        parsed = make_url(url)
        args: dict[str, object] = {}
        if parsed.get_backend_name() == "postgresql":
            args["connect_timeout"] = max(2, round(timeout_s))  # libpq's minimum is 2 s
        engine = create_engine(parsed, poolclass=NullPool, connect_args=args)
    except (ArgumentError, ImportError) as err:
        raise Permanent(first_line(err)) from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        # SQLAlchemy wraps the driver's error; the driver's own message is the useful one.
        orig = getattr(err, "orig", None) or err
        if any(marker in str(orig) for marker in PERMANENT_DATABASE_ERRORS):
            raise Permanent(first_line(orig)) from None
        raise NotReady(first_line(orig)) from None
    finally:
        engine.dispose()


def wait(
    what: str, url: str, check: Callable[[str, float], None], deadline: float, timeout: float
) -> str | None:
    """Retry ``check`` until it passes (None) or fails for good (the error line)."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            check(url, max(0.5, min(ATTEMPT_TIMEOUT_S, remaining)))
            return None
        except Permanent as err:
            return f"{what} {redact(url)} cannot be used: {err}"
        except NotReady as err:
            reason = str(err)
        if time.monotonic() + POLL_INTERVAL_S >= deadline:
            return f"{what} {redact(url)} did not answer within {timeout:g}s ({reason})"
        time.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    """Wait for the configured services; 0 when all answer, 1 otherwise."""
    parser = argparse.ArgumentParser(description="Wait until the broker and database answer.")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    targets: list[tuple[str, str, Callable[[str, float], None]]] = []
    if broker := os.environ.get("LUSIFER_BROKER_URL"):
        targets.append(("broker", broker, ping_broker))
    if database := os.environ.get("LUSIFER_DATABASE_URL"):
        targets.append(("database", database, ping_database))
    for what, url, check in targets:
        error = wait(what, url, check, deadline, args.timeout)
        if error is not None:
            print(f"wait_for: {error}", file=sys.stderr)
            return 1
    if targets:
        print(f"wait_for: {' and '.join(t[0] for t in targets)} ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
