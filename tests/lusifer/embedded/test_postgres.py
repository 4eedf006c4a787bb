"""The embedded PostgreSQL of local mode: started on demand, shared, persisted, stopped by
its last user, an orphan a SIGKILL left cleaned by the next user, bad directories refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from lusifer.core.errors import ServiceError
from lusifer.embedded.postgres import (
    EmbeddedPostgres,
    bundled_major,
    embedded_postgres,
)

pytestmark = pytest.mark.integration


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _servers(work_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    data_dir = str((work_dir / "pg").resolve())
    return [line for line in out.splitlines() if "bin/postgres" in line and data_dir in line]


def test_started_on_demand_persisted_and_stopped_by_its_last_user(tmp_path: Path) -> None:
    with embedded_postgres(tmp_path) as url:
        assert "host=" in url and "@/" in url  # a unix socket, no TCP port
        with psycopg.connect(_dsn(url), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (42)")
            version = conn.execute("SHOW server_version").fetchone()
        assert version is not None and version[0].startswith(str(bundled_major()))
        assert len(_servers(tmp_path)) == 1
    assert _servers(tmp_path) == []
    # A later command finds what the first one wrote.
    with embedded_postgres(tmp_path) as url, psycopg.connect(_dsn(url)) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone() == (42,)
    assert _servers(tmp_path) == []


def test_two_users_share_one_server_until_the_last_leaves(tmp_path: Path) -> None:
    with embedded_postgres(tmp_path) as first:
        with embedded_postgres(tmp_path) as second:
            assert first == second
            assert len(_servers(tmp_path)) == 1
        # The first user still holds it.
        assert len(_servers(tmp_path)) == 1
        with psycopg.connect(_dsn(first)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _servers(tmp_path) == []


_HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from lusifer.embedded.postgres import embedded_postgres
with embedded_postgres(Path(sys.argv[1])):
    print("ready", flush=True)
    time.sleep(300)
"""


def _holder(work_dir: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_WAIT, str(work_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[3],
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_sigkilled_users_server_is_joined_and_stopped_by_the_next(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    assert len(_servers(tmp_path)) == 1  # the orphan
    with embedded_postgres(tmp_path) as url, psycopg.connect(_dsn(url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _servers(tmp_path) == []


def test_a_sigterm_on_a_user_stops_the_server(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    # Python's default SIGTERM ends the process without unwinding: only the next user cleans
    # up then. A command converts SIGTERM to KeyboardInterrupt (coordinator.cli.main); here
    # SIGINT stands for it.
    holder.send_signal(signal.SIGINT)
    holder.wait(60)
    deadline = time.monotonic() + 30
    while _servers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers(tmp_path) == []


def test_a_data_directory_of_another_major_is_one_line(tmp_path: Path) -> None:
    data_dir = EmbeddedPostgres(tmp_path).data_dir
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("99\n")
    with pytest.raises(ServiceError) as caught, embedded_postgres(tmp_path):
        pass
    message = str(caught.value)
    assert "PostgreSQL 99" in message and f"PostgreSQL {bundled_major()}" in message
    assert "\n" not in message


def test_a_work_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with (
        pytest.raises(ServiceError, match="LUSIFER_WORK_DIR") as caught,
        embedded_postgres(blocker / "runs"),
    ):
        pass
    assert "\n" not in str(caught.value)


def test_a_full_disk_is_one_line_and_leaves_no_half_made_directory(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(small)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        with (
            pytest.raises(ServiceError, match=r"disk|space") as caught,
            embedded_postgres(small / "runs"),
        ):
            pass
        assert "\n" not in str(caught.value)
        assert not (small / "runs" / "pg").exists()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_the_socket_moves_out_of_a_directory_too_deep_for_one(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(deep)
    assert server.socket_dir != server.data_dir.resolve()
    assert len(str(server.socket_dir)) < 100
    with embedded_postgres(deep) as url, psycopg.connect(_dsn(url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
