"""Local mode leaves nothing running when the coordinator is interrupted (Ctrl-C), stopped
(SIGTERM) or killed (SIGKILL) once the next command has run, and the run can be resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lusifer.stub import StubConfig, StubServer

pytestmark = pytest.mark.integration
LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _workers_of(pid: int) -> list[str]:
    # -ww: never cut lines to $COLUMNS.
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"-{pid}@" in line and "celery" in line]


def _wait_gone(pid: int, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _workers_of(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _embedded_left(work_dir: Path) -> list[str]:
    """Embedded servers (Redis, PostgreSQL) of ``work_dir`` still running."""
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    root = str(work_dir.resolve())
    return [
        line
        for line in out.splitlines()
        if root in line and ("redis-server" in line or "bin/postgres" in line)
    ]


def _start(args: list[str], cwd: Path, data_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    env["LUSIFER_DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        [LUSIFER, *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
    ids=["ctrl-c", "sigterm", "sigkill"],
)
def test_stopping_the_coordinator_stops_local_workers(
    sig: signal.Signals, data_dir: Path, tmp_path: Path
) -> None:
    with StubServer(StubConfig(latency_s=0.3)) as stub:
        args = [
            "run",
            "--base-url",
            stub.base_url,
            "--model",
            "stub-model",
            "--folds",
            "u1",
            "--users",
            "2,3,4",
            "--run-id",
            "stopped",
        ]
        coordinator = _start(args, tmp_path, data_dir)
        try:
            deadline = time.monotonic() + 180
            while stub.chat_request_count() < 3:
                assert time.monotonic() < deadline and coordinator.poll() is None
                time.sleep(0.2)
            assert _workers_of(coordinator.pid)
            coordinator.send_signal(sig)
            _out, err = coordinator.communicate(timeout=180)
        finally:
            if coordinator.poll() is None:
                coordinator.kill()
        work_dir = tmp_path / "lusifer-runs"
        if sig != signal.SIGKILL:
            assert coordinator.returncode == 130
            assert "lusifer resume stopped" in err and "Traceback" not in err
            # The last user of the embedded database stops it on the way out.
            assert _embedded_left(work_dir) == []
        assert _wait_gone(coordinator.pid, 30) == []

        resumed = _start(["resume", "stopped"], tmp_path, data_dir)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        assert "resuming run stopped" in out
        # A SIGKILLed coordinator's database is joined by the next command and stopped with it.
        assert _embedded_left(work_dir) == []
        assert (work_dir / "pg" / "PG_VERSION").exists()


def test_the_embedded_broker_stops_at_the_end(tmp_path: Path) -> None:
    from lusifer.embedded.redis import embedded_redis

    with embedded_redis(tmp_path) as url:
        socket_path = url.removeprefix("redis+socket://")
        assert Path(socket_path).exists()
        out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        assert socket_path in out
    time.sleep(0.5)
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert socket_path not in out


def test_two_local_runs_at_once_share_the_database_and_leave_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    with StubServer(StubConfig(latency_s=0.2)) as stub:
        common = ["--base-url", stub.base_url, "--model", "stub-model", "--folds", "u1"]
        first = _start(["run", *common, "--users", "2,3", "--run-id", "one"], tmp_path, data_dir)
        second = _start(["run", *common, "--users", "4,5", "--run-id", "two"], tmp_path, data_dir)
        outcomes = [p.communicate(timeout=300) for p in (first, second)]
    for process, (_out, err) in zip((first, second), outcomes, strict=True):
        assert process.returncode == 0, err
    work_dir = tmp_path / "lusifer-runs"
    assert _embedded_left(work_dir) == []
    runs = _start(["runs"], tmp_path, data_dir)
    out, err = runs.communicate(timeout=120)
    assert runs.returncode == 0, err
    assert "one" in out and "two" in out
    assert _embedded_left(work_dir) == []
