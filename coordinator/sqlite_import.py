"""Runs of earlier versions, kept in a SQLite file, copied into today's database."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from lusifer.core.errors import DataError
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Run
from lusifer.store.transfer import copy_tables


def _snapshot(path: Path, copy: Path) -> None:
    """A consistent copy of the SQLite file at ``path`` (its WAL included), read-only."""
    if not path.is_file():
        raise DataError(
            f"{path} is not a file; give the SQLite database of an earlier local run "
            "(e.g. lusifer-runs/lusifer.db)"
        )
    try:
        with (
            closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source,
            closing(sqlite3.connect(copy)) as target,
        ):
            names = {row[0] for row in source.execute("SELECT name FROM sqlite_master")}
            source.backup(target)
    except sqlite3.DatabaseError as err:
        raise DataError(f"{path} is not a SQLite database ({err}); give a lusifer.db") from None
    if "run" not in names:
        raise DataError(f"{path} holds no Lusifer runs (no table 'run'); give a lusifer.db")


def _run_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Run)).scalar_one())


def import_sqlite_file(
    path: Path, target: Engine, on_table: Callable[[str, int], None]
) -> tuple[int, int]:
    """Copy every table of the SQLite file into ``target``; (runs before, runs after).

    The file is left as it is: a snapshot of it is brought to the current schema and read.
    ``on_table(name, rows)`` is told of each table as it is read.
    """
    with tempfile.TemporaryDirectory(prefix="lusifer-import-") as tmp:
        copy = Path(tmp) / "source.db"
        _snapshot(path, copy)
        source = get_engine(f"sqlite:///{copy}")
        try:
            create_tables(source)
            before = _run_count(target)
            copy_tables(source, target, on_table=on_table)
        except SQLAlchemyError as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise DataError(f"{path} could not be imported ({reason}); nothing was kept") from None
        finally:
            source.dispose()
    return before, _run_count(target)
