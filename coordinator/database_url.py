"""Which database a command uses: the configured one, or the work directory's embedded one.

Apart from ``coordinator.services`` so that a command that only reads (``lusifer runs``,
``status``) learns there is no database before it imports the engine, the queue or the LLM.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from lusifer.core.settings import Settings
from lusifer.embedded.postgres import database_url_for


def database_url_of(settings: Settings, *, create: bool = True) -> str:
    """The database of this process: the configured one, or the work directory's embedded
    PostgreSQL, started (or joined) on first use and held until the process exits.

    ``create=False`` for commands that only read: they refuse a work directory that holds no
    database rather than make an empty one.
    """
    if settings.database_url:
        return settings.database_url
    return database_url_for(Path(settings.work_dir), create=create, on_wait=_say_waiting)


def _say_waiting(message: str) -> None:
    Console(stderr=True).print(f"[yellow]{escape(message)}[/]")
