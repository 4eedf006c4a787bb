"""The `lusifer export` command: a stored run's tables as Parquet, CSV or one SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.common import app, console, guard, settings_or_fail

FORMAT_HELP = (
    "parquet or csv (a directory of ratings, profiles, calls and run tables), or sqlite "
    "(one portable file holding the four tables)"
)


@app.command()
def export(
    run_id: str,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "parquet",
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write (default: RUN-parquet/, RUN-csv/ or RUN.sqlite)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output")] = False,
) -> None:
    """Write a run's ratings, profiles and LLM calls to files for analysis elsewhere."""

    def action() -> None:
        from coordinator.api.export import FORMATS, default_target, export_results
        from coordinator.api.stored import results
        from lusifer.core.errors import ConfigurationError

        if fmt not in FORMATS:
            raise ConfigurationError(f"unknown --format {fmt!r}: choose {', '.join(FORMATS)}")
        found = results(run_id, settings_or_fail())
        target = output or default_target(run_id, fmt)
        written = export_results(found, fmt, target, overwrite=overwrite)
        console.print(
            f"run {run_id}: {len(found.ratings)} ratings, {len(found.profiles)} profile steps, "
            f"{len(found.calls)} calls written to {written}",
            highlight=False,
            markup=False,
        )

    guard(action)
