"""Starting and stopping the embedded PostgreSQL server of a work directory."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psutil

from lusifer.core.errors import ServiceError
from lusifer.embedded.pg_files import DATABASE, EmbeddedPostgres, bin_dir, bundled_major

_START_TIMEOUT_S = 60
_SERVER_USER_WHEN_ROOT = "nobody"


@dataclass(frozen=True)
class _Identity:
    """Who the server's programs run as (PostgreSQL refuses root).

    Not root: this user. Root: a non-root uid in a user namespace of its own, mapped to root
    outside, so its files stay root's and any work directory root can reach works. Where user
    namespaces are refused (some containers): ``nobody``, who must be able to reach it.
    """

    prefix: tuple[str, ...] = ()
    owner: pwd.struct_passwd | None = None


@lru_cache(maxsize=1)
def _identity() -> _Identity:
    if os.geteuid() != 0:
        return _Identity()
    unshare = shutil.which("unshare")
    if unshare:
        prefix = (unshare, "--user", "--map-user=65534", "--map-group=65534")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
            if probe.returncode == 0:
                return _Identity(prefix=prefix)
    try:
        return _Identity(owner=pwd.getpwnam(_SERVER_USER_WHEN_ROOT))
    except KeyError:
        raise ServiceError(
            "PostgreSQL refuses to run as root, user namespaces are not allowed here and this "
            "system has no 'nobody' user; run lusifer as another user, or set "
            "LUSIFER_DATABASE_URL"
        ) from None


def _pg(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    who = _identity()
    kwargs: dict[str, object] = {}
    if who.owner is not None:
        kwargs.update(user=who.owner.pw_uid, group=who.owner.pw_gid, extra_groups=[])
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [*who.prefix, str(bin_dir() / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd="/",
        **kwargs,
    )


def _server_pid(server: EmbeddedPostgres) -> int | None:
    """The postmaster's pid when a server of this data directory runs."""
    pid_file = server.data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        proc = psutil.Process(pid)
        if proc.name() == "postgres":
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def ensure_running(server: EmbeddedPostgres) -> None:
    if _server_pid(server) is not None:
        return
    _check_version(server)
    if not (server.data_dir / "PG_VERSION").exists():
        _init(server)
    _start(server)


def _check_version(server: EmbeddedPostgres) -> None:
    version_file = server.data_dir / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    if found != str(bundled_major()):
        raise ServiceError(
            f"the embedded database in {server.data_dir} was made by PostgreSQL {found}, and "
            f"this Lusifer ships PostgreSQL {bundled_major()}; export its runs with the "
            f"Lusifer that made it (`lusifer export`), or move {server.data_dir} away"
        )


def _prepare_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    owner = _identity().owner
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o700)


def _init(server: EmbeddedPostgres) -> None:
    # A directory an interrupted initdb left half-made: start it again from nothing.
    if server.data_dir.exists() and not (server.data_dir / "PG_VERSION").exists():
        shutil.rmtree(server.data_dir, ignore_errors=True)
    try:
        _prepare_dir(server.data_dir)
    except OSError as err:
        raise ServiceError(
            f"cannot create the embedded database in {server.data_dir} ({err.strerror}); "
            "make it writable or set LUSIFER_WORK_DIR to a writable directory"
        ) from None
    _check_reachable(server)
    result = _pg(
        [
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        timeout=120,
    )
    if result.returncode != 0:
        shutil.rmtree(server.data_dir, ignore_errors=True)
        raise ServiceError(
            f"the embedded database could not be created in {server.data_dir} "
            f"({_last_line(result.stderr)}); free disk space or set LUSIFER_WORK_DIR elsewhere"
        )


def _check_reachable(server: EmbeddedPostgres) -> None:
    """Where the server runs as ``nobody``, nobody must be able to reach its directory."""
    owner = _identity().owner
    if owner is None:
        return
    if not _pg_probe(server.data_dir, owner):
        raise ServiceError(
            f"the embedded database runs as 'nobody' (PostgreSQL refuses root), who cannot "
            f"reach {server.data_dir}; give its parent directories o+x (chmod o+x DIR) or set "
            "LUSIFER_WORK_DIR to a directory others can traverse"
        )


def _pg_probe(path: Path, user: pwd.struct_passwd) -> bool:
    probe = subprocess.run(
        ["test", "-w", str(path)],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


def _start(server: EmbeddedPostgres) -> None:
    socket_dir = server.socket_dir
    if socket_dir != server.data_dir.resolve():
        _prepare_dir(socket_dir)
    server.log_file.parent.mkdir(parents=True, exist_ok=True)
    server.log_file.touch()
    owner = _identity().owner
    if owner is not None:
        os.chown(server.log_file, owner.pw_uid, owner.pw_gid)
    options = " ".join(
        [
            "-c listen_addresses=''",
            f"-k {socket_dir}",
            # Local workers keep small pools; two local commands at once stay far below this.
            "-c max_connections=200",
        ]
    )
    try:
        result = _pg(
            [
                "pg_ctl",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log_file),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                options,
                "start",
            ],
            timeout=_START_TIMEOUT_S + 30,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(
            f"the embedded database did not start within {_START_TIMEOUT_S} s; "
            f"see {server.log_file}"
        ) from None
    if result.returncode != 0:
        raise ServiceError(
            f"the embedded database did not start ({_log_reason(server)}); see {server.log_file}"
        )
    _create_database(server)


def _create_database(server: EmbeddedPostgres) -> None:
    exists = _pg(
        [
            "psql",
            "-h",
            str(server.socket_dir),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        ],
        timeout=60,
    )
    if exists.stdout.strip() == "1":
        return
    made = _pg(["createdb", "-h", str(server.socket_dir), "-U", "postgres", DATABASE], timeout=60)
    if made.returncode != 0:
        raise ServiceError(
            f"the embedded database could not create its database ({_last_line(made.stderr)}); "
            f"see {server.log_file}"
        )


def stop_server(server: EmbeddedPostgres) -> None:
    """Stop the server: fast shutdown (sessions end, committed work stays), then immediate,
    then SIGKILL. Signals, not ``pg_ctl stop``: pg_ctl refuses root."""
    pid = _server_pid(server)
    if pid is None:
        return
    for sig, wait_s in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        try:
            process = psutil.Process(pid)
            process.send_signal(sig)
            process.wait(wait_s)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            continue


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _log_reason(server: EmbeddedPostgres) -> str:
    """The server log's last FATAL or PANIC line, which says why it did not start."""
    try:
        lines = server.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines[-200:]):
        if "FATAL" in line or "PANIC" in line:
            return line.strip()
    return _last_line("\n".join(lines[-5:]))
