"""Printing the figures as tables and keeping them in one JSON file."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Table", "print_table", "save_figure"]

console = Console()
if not console.is_terminal:
    # Redirected to a file, rich would squeeze the wide tables into 80 columns.
    console = Console(width=160)


def print_table(table: Table) -> None:
    """Print a figure's table."""
    console.print(table)


def save_figure(path: Path, name: str, figure: dict[str, Any]) -> None:
    """Merge one figure into the JSON file at ``path`` (other figures in it are kept)."""
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = {
        **figure,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    console.print(f"[dim]{name} written to {path}[/]")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0
