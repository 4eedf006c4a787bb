"""What every `lusifer` command shares: the app, the consoles, and one-line failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from kombu.exceptions import OperationalError as KombuOperationalError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from lusifer.errors import ConfigurationError, LusiferError
from lusifer.settings import Settings, get_settings

app = typer.Typer(
    name="lusifer",
    help="Simulate recommender-system users with an LLM and measure how faithful they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
DATA_DIR_HELP = (
    "ml-100k directory, or one holding ml-100k/ and tmdb/; "
    "default: LUSIFER_DATA_DIR, else downloaded from GroupLens"
)


def guard(action: Callable[[], T], run_id: str | None = None) -> T:
    """Turn expected failures into one line on stderr and a non-zero exit."""
    try:
        return action()
    except LusiferError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as err:
        # A database that fails mid-run (dropped connection, full disk): the run is resumable.
        reason = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
        hint = f"`lusifer resume {run_id}` continues the run" if run_id else "check the database"
        err_console.print(
            f"[bold red]error:[/] database error ({reason}); {hint}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    except KombuOperationalError as err:
        hint = f"`lusifer resume {run_id}` continues the run" if run_id else "check the broker"
        err_console.print(
            f"[bold red]error:[/] broker error ({err}); {hint}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        hint = f"; `lusifer resume {run_id}` finishes it" if run_id else ""
        err_console.print(f"[yellow]interrupted[/]{hint}")
        raise typer.Exit(130) from None


def settings_or_fail() -> Settings:
    try:
        return get_settings()
    except Exception as err:  # pydantic's ValidationError of a bad environment variable
        first = str(err).strip().splitlines()
        raise ConfigurationError(
            f"invalid LUSIFER_ environment setting: {' '.join(first[:3])}; fix the variable"
        ) from None
