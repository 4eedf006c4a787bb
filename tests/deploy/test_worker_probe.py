"""`python -m workers.probe`, the worker pods' readiness and liveness command, run against a
real worker process, Redis and PostgreSQL, and against each of them missing."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lusifer.core.settings import Settings
from lusifer.queue import make_celery
from tests.integration.services import (
    celery_workers,
    free_port,
    postgres_schema,
    run_cli,
    service_env,
)

pytestmark = pytest.mark.integration


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.probe", *args, "--timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def node_of(env: dict[str, str]) -> str:
    """The node name of the worker consuming the test's queue, once it answers."""
    app = make_celery(Settings(_env_file=None, broker_url=env["LUSIFER_BROKER_URL"]))
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            replies = app.control.inspect(timeout=1.0).active_queues() or {}
            for node, queues in replies.items():
                if any(q["name"] == env["LUSIFER_QUEUE"] for q in queues):
                    return str(node)
        raise AssertionError("no worker consumes the queue")
    finally:
        app.close()


@pytest.fixture
def schema_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with postgres_schema("lusifer_probe") as url:
        yield service_env(url, f"lusifer-probe-{secrets.token_hex(3)}", None)


def test_a_worker_is_ready_only_with_broker_database_schema_and_its_consumer(
    schema_env: dict[str, str], tmp_path: Path
) -> None:
    env = schema_env
    # Before the migration: the database answers, but its schema is not this code's.
    unmigrated = probe(env, "ready", "--node", "celery@nowhere")
    assert unmigrated.returncode == 1
    assert "lusifer init-db" in unmigrated.stderr, unmigrated.stderr
    assert run_cli(["init-db"], env, tmp_path, timeout=60).returncode == 0
    with celery_workers(env, tmp_path, count=1, threads=2):
        node = node_of(env)
        ok = probe(env, "ready", "--node", node)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == f"probe: ready: broker, database and worker {node} answer"
        assert probe(env, "alive", "--node", node).returncode == 0
        # Another pod's name: this process consumes nothing.
        other = probe(env, "ready", "--node", "celery@not-this-pod")
        assert other.returncode == 1
        assert other.stderr.strip() == (
            "probe: not ready: worker celery@not-this-pod does not answer a ping through the broker"
        )
        stuck = probe(env, "alive", "--node", "celery@not-this-pod")
        assert stuck.returncode == 1 and "consumer is stuck" in stuck.stderr
        # The database away: not ready, and the line names it (password never shown).
        closed = free_port()
        no_db = {**env, "LUSIFER_DATABASE_URL": f"postgresql+psycopg://u:pw@127.0.0.1:{closed}/x"}
        away = probe(no_db, "ready", "--node", node)
        assert away.returncode == 1
        assert away.stderr.startswith("probe: not ready: database postgresql+psycopg://u:***@")
        assert "pw@" not in away.stderr and len(away.stderr.strip().splitlines()) == 1
    # The broker away: not ready; but alive, since a restart would not bring it back.
    no_broker = {**env, "LUSIFER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = time.monotonic()
    away = probe(no_broker, "ready", "--node", "celery@x")
    assert away.returncode == 1 and away.stderr.startswith("probe: not ready: broker redis://")
    alive = probe(no_broker, "alive", "--node", "celery@x")
    assert alive.returncode == 0, alive.stderr
    assert "broker cannot be reached" in alive.stdout
    assert time.monotonic() - started < 30
    assert "Traceback" not in away.stderr + alive.stderr
