"""deploy/wait_for.py against the real Redis and PostgreSQL, and against a closed port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WAIT_FOR = Path(__file__).resolve().parents[2] / "deploy" / "wait_for.py"
REDIS_URL = "redis://127.0.0.1:6379/13"
DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run wait_for.py with only these LUSIFER_ variables; return the result and its duration."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LUSIFER_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(WAIT_FOR), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


@pytest.mark.integration
def test_succeeds_when_redis_and_postgresql_answer() -> None:
    env = {"LUSIFER_BROKER_URL": REDIS_URL, "LUSIFER_DATABASE_URL": DATABASE_URL}
    result, _ = wait_for(env, "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "wait_for: broker and database ready"


def test_nothing_configured_means_nothing_to_wait_for() -> None:
    result, _ = wait_for({}, "--timeout", "2")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("LUSIFER_BROKER_URL", "redis://:s3cret@127.0.0.1:{port}/0"),
        ("LUSIFER_DATABASE_URL", "postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/test"),
    ],
)
def test_fails_fast_with_one_line_on_a_closed_port(variable: str, url: str) -> None:
    port = closed_port()
    result, elapsed = wait_for({variable: url.format(port=port)}, "--timeout", "2")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wait_for: ") and "did not answer within 2s" in lines[0]
    assert f"127.0.0.1:{port}" in lines[0]
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert 1.5 <= elapsed < 6, elapsed


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("LUSIFER_BROKER_URL", "amqp://guest@127.0.0.1:5672//"),
        ("LUSIFER_DATABASE_URL", "not a url"),
    ],
)
def test_unusable_urls_fail_at_once(variable: str, url: str) -> None:
    result, elapsed = wait_for({variable: url}, "--timeout", "30")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot be used" in result.stderr
    assert elapsed < 10
