"""Wait until the broker and the database of this container answer, then exit 0.

Usage: ``python deploy/wait_for.py [--timeout S]``. Reads ``LUSIFER_BROKER_URL`` (redis:// or
rediss://: PING) and ``LUSIFER_DATABASE_URL`` (SQLAlchemy: SELECT 1) from the environment; an
unset variable is not waited for. On timeout it prints one line to stderr and exits 1. Wrong
credentials fail at once: waiting cannot fix them.
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
from sqlalchemy.pool import NullPool

POLL_INTERVAL_S = 0.5
ATTEMPT_TIMEOUT_S = 5.0
# SQLSTATE classes no retry can fix: 28 = bad credentials, 3D000 = no such database.
PERMANENT_SQLSTATES = ("28", "3D000")


class Permanent(Exception):
    """A failure that waiting cannot fix (wrong password, unknown database)."""


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def first_line(err: BaseException) -> str:
    """The first line of an error message, or the error's type name."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def ping_broker(url: str, timeout_s: float) -> None:
    """PING the Redis broker once."""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise Permanent("only redis:// and rediss:// brokers are supported")
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
    except (redis.AuthenticationError, redis.AuthorizationError) as err:
        raise Permanent(f"{first_line(err)}; check the password in the URL") from None
    except redis.ResponseError as err:
        if "WRONGPASS" in str(err) or "AUTH" in str(err):
            raise Permanent(f"{first_line(err)}; check the password in the URL") from None
        raise
    finally:
        client.close()


def ping_database(url: str, timeout_s: float) -> None:
    """Connect to the database once and run SELECT 1."""
    parsed = make_url(url)
    args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        args["connect_timeout"] = max(1, round(timeout_s))
    engine = create_engine(parsed, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        sqlstate = getattr(getattr(err, "orig", None), "sqlstate", None) or ""
        if sqlstate.startswith(PERMANENT_SQLSTATES):
            raise Permanent(first_line(getattr(err, "orig", err))) from None
        raise
    finally:
        engine.dispose()


def wait(what: str, url: str, check: Callable[[str, float], None], deadline: float) -> str | None:
    """Retry ``check`` until it passes (None) or the deadline passes (the error line)."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            check(url, max(0.5, min(ATTEMPT_TIMEOUT_S, remaining)))
            return None
        except Permanent as err:
            return f"{what} {redact(url)} refused the connection: {err}"
        except Exception as err:  # every driver error means "not ready yet" here
            reason = first_line(err)
        if time.monotonic() + POLL_INTERVAL_S >= deadline:
            return f"{what} {redact(url)} did not answer in time ({reason})"
        time.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    """Wait for the configured services; 0 when all answer, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    targets: list[tuple[str, str, Callable[[str, float], None]]] = []
    if broker := os.environ.get("LUSIFER_BROKER_URL"):
        targets.append(("broker", broker, ping_broker))
    if database := os.environ.get("LUSIFER_DATABASE_URL"):
        targets.append(("database", database, ping_database))
    for what, url, check in targets:
        error = wait(what, url, check, deadline)
        if error is not None:
            print(f"wait_for: {error}; waited up to {args.timeout:g}s", file=sys.stderr)
            return 1
    if targets:
        print(f"wait_for: {' and '.join(t[0] for t in targets)} ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
