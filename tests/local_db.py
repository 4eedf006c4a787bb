"""Reading local mode's embedded database from a test, as a later command would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from lusifer.embedded.postgres import embedded_postgres


@contextmanager
def local_database(work_dir: Path) -> Iterator[Connection]:
    """A connection to ``work_dir``'s embedded database, started (joined) for the block."""
    with embedded_postgres(work_dir) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()


def nothing_written(work_dir: Path) -> bool:
    """True when a command left no database (neither embedded nor an old SQLite file)."""
    return not (work_dir / "pg").exists() and not (work_dir / "lusifer.db").exists()
