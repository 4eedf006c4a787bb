"""Writing a stored run's DataFrames to files: Parquet, CSV, or one portable SQLite file.

Everything is written next to the target under a temporary name and moved into place at the
end, so an export that fails (a full disk, an interrupt) leaves no half-written result.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Literal

import pandas as pd

from coordinator.api.stored import Results
from lusifer.core.errors import ConfigurationError

ExportFormat = Literal["parquet", "csv", "sqlite"]
FORMATS: tuple[ExportFormat, ...] = ("parquet", "csv", "sqlite")


def default_target(run_id: str, fmt: str) -> Path:
    """``RUN.sqlite`` for SQLite, else a directory ``RUN-parquet`` / ``RUN-csv``."""
    safe = run_id.replace("/", "_").replace(":", "_")
    return Path(f"{safe}.sqlite") if fmt == "sqlite" else Path(f"{safe}-{fmt}")


def _tables(found: Results) -> dict[str, pd.DataFrame]:
    profiles = found.profiles.copy()
    # Lists do not fit a CSV cell or a SQLite column: stored as the JSON they came from.
    profiles["item_ids"] = [json.dumps(ids) for ids in profiles["item_ids"]]
    run = pd.DataFrame(
        [{"run_id": found.run_id, "status": found.status, "config_json": json.dumps(found.config)}]
    )
    return {"ratings": found.ratings, "profiles": profiles, "calls": found.calls, "run": run}


def export_results(found: Results, fmt: str, target: Path, *, overwrite: bool = False) -> Path:
    """Write a run's tables in ``fmt`` to ``target``; returns the path written."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown export format {fmt!r}: choose {', '.join(FORMATS)}")
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} exists: choose another --output or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tables = _tables(found)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if fmt == "sqlite":
            written = staging / "export.sqlite"
            with closing(sqlite3.connect(written)) as conn:
                for name, frame in tables.items():
                    frame.to_sql(name, conn, index=False)
                conn.commit()
        else:
            written = staging / "export"
            written.mkdir()
            for name, frame in tables.items():
                if fmt == "parquet":
                    frame.to_parquet(written / f"{name}.parquet", index=False)
                else:
                    frame.to_csv(written / f"{name}.csv", index=False)
        if target.exists():
            _remove(target)
        os.replace(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
