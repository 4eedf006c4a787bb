"""The line an example prints on Ctrl-C (no traceback: stopping a long training is expected)."""

from __future__ import annotations

from pathlib import Path


def interrupted_line(work_dir: Path) -> str:
    """What Ctrl-C leaves behind: every finished call is stored, so a rerun goes on from there."""
    return (
        f"[yellow]interrupted[/]: every finished LLM call is kept in {work_dir}; "
        "the same command again answers them from the cache and goes on"
    )
