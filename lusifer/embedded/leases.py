"""Who uses the embedded PostgreSQL of a work directory: one lease per holder, and the lock
under which servers are started, joined, left and stopped."""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from lusifer.core.errors import ServiceError
from lusifer.embedded.pg_files import EmbeddedPostgres

_LOCK_WAIT_S = 120.0


@contextmanager
def locked(server: EmbeddedPostgres, on_wait: Callable[[str], None] | None) -> Iterator[None]:
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


def add_lease(server: EmbeddedPostgres) -> Path:
    server.leases.mkdir(parents=True, exist_ok=True)
    # One lease per holder, not per process: a process may hold the server twice.
    mark = _process_mark(os.getpid()) or str(os.getpid())
    lease = server.leases / f"{mark}-{secrets.token_hex(4)}"
    lease.touch()
    return lease


def prune_leases(server: EmbeddedPostgres) -> int:
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
