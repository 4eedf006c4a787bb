"""`lusifer import-sqlite`: runs of earlier versions, kept in a SQLite file, brought into the
database of today (the work directory's embedded PostgreSQL, or LUSIFER_DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from coordinator.cli.common import app, console, guard, settings_or_fail


@app.command("import-sqlite")
def import_sqlite(
    path: Annotated[Path, typer.Argument(help="SQLite database of an earlier version")],
) -> None:
    """Bring the runs of an earlier version's SQLite file into today's database."""

    def action() -> None:
        from coordinator.database_url import database_url_of
        from coordinator.sqlite_import import import_sqlite_file
        from lusifer.store.engines import check_database, create_tables, get_engine, redact_url

        target = get_engine(database_url_of(settings_or_fail()))
        check_database(target)
        create_tables(target)
        before, after = import_sqlite_file(
            path,
            target,
            on_table=lambda name, n: console.print(f"  {escape(name)}: {n:,} rows read"),
        )
        console.print(
            f"imported {escape(str(path))}: {after - before} new runs "
            f"({after} in {escape(redact_url(str(target.url)))})"
        )

    guard(action)
