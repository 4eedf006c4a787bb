"""One coordinator per run: a second `lusifer run`/`resume` of the same run id is refused.

Two coordinators on one run would both plan it (with different options their plans mix in
one run) and both hand out and re-send its jobs. The lock lives where the run does:

- PostgreSQL: a session advisory lock on a connection of its own, held while the command
  runs. The server drops it when that connection ends, so a coordinator killed with SIGKILL
  leaves no stale lock. The connection's ``application_name`` names the holder, which the
  refused command reads from ``pg_stat_activity``.
- SQLite (local mode, own files): an ``flock`` on a file beside the database, which the
  kernel drops when the process ends, whatever ends it. The file names the holder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from lusifer.core.errors import ConfigurationError

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_HOLDER = text(
    "SELECT a.application_name, a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)"
)


def lock_key(run_id: str) -> int:
    """A stable non-negative 63-bit key of a run id (PostgreSQL's advisory locks take bigint)."""
    digest = hashlib.sha256(f"lusifer-run:{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def holder_name() -> str:
    """Who holds a lock, as a refused command shows it."""
    return f"lusifer coordinator pid {os.getpid()} on {socket.gethostname()}"[:63]


def _refused(run_id: str, holder: str) -> ConfigurationError:
    return ConfigurationError(
        f"run {run_id!r} is already being coordinated ({holder}); wait for that command to end "
        "or stop it, then `lusifer resume` the run"
    )


@contextmanager
def hold_run(engine: Engine, run_id: str) -> Iterator[None]:
    """Hold the run's lock for the block, or raise ``ConfigurationError`` naming its holder."""
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine, run_id):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(str(engine.url.database)), run_id):
            yield
    else:
        yield


@contextmanager
def _postgres_lock(engine: Engine, run_id: str) -> Iterator[None]:
    key = lock_key(run_id)
    # A connection of its own, outside the pool: the lock ends with it, and the pool's
    # connections never carry this session's application_name.
    own = create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={"application_name": holder_name()},
    )
    conn = own.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not conn.execute(_TRY_LOCK, {"key": key}).scalar():
            row = conn.execute(_HOLDER, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first()
            holder = "another lusifer command"
            if row is not None:
                holder = f"{row[0] or 'another client'}, since {row[1]:%Y-%m-%d %H:%M:%S}"
            raise _refused(run_id, holder)
        yield
    finally:
        # The lock ends with its connection. A database outage may have dropped it already;
        # closing it then must not turn a finished run into an error.
        with suppress(SQLAlchemyError):
            conn.close()
        own.dispose()


@contextmanager
def _file_lock(database: Path, run_id: str) -> Iterator[None]:
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    path = database.resolve().parent / f".lusifer-run-{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _refused(run_id, handle.read().strip() or "another lusifer command") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{holder_name()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
