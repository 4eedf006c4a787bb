"""What every `lusifer` command shares: the app, the consoles, and one-line failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from lusifer.core.config import MOVIELENS_FOLDS, DatasetConfig, parse_dataset_config
from lusifer.core.errors import ConfigurationError, ExitCode, LusiferError
from lusifer.core.redaction import redact
from lusifer.core.settings import Settings, get_settings

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
COLUMNS_HELP = (
    "Own data: our field=CSV column pairs, e.g. user_id=uid,item_id=movie,rating=stars "
    "(fields: user_id item_id rating timestamp title year genres overview age gender occupation)"
)
# The options that choose the data, shared by `run`, `score` and `baselines`.
DataDirOption = Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)]
RatingsCsvOption = Annotated[Path | None, typer.Option(help="Own data: ratings CSV")]
ItemsCsvOption = Annotated[Path | None, typer.Option(help="Own data: items CSV")]
UsersCsvOption = Annotated[Path | None, typer.Option(help="Own data: users CSV")]
ColumnsOption = Annotated[str | None, typer.Option(help=COLUMNS_HELP)]
NFoldsOption = Annotated[int, typer.Option(help="Own data: folds f1..fN")]


def guard(action: Callable[[], T], run_id: str | None = None) -> T:
    """Turn expected failures into one line on stderr and the documented exit code.

    Every text from outside (a server's message, a run id, a path) is escaped: rich markup in
    it must neither crash the line nor restyle it.
    """
    rid = escape(run_id) if run_id else None
    try:
        return action()
    except LusiferError as err:
        _fail(escape(redact(str(err))), err.exit_code)
    except KeyboardInterrupt:
        hint = f"; `lusifer resume {rid}` finishes it" if rid else ""
        err_console.print(f"[yellow]interrupted[/]{hint}")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except Exception as err:
        line = _service_or_path_failure(err, rid)
        if line is None:
            raise
        _fail(line, ExitCode.ERROR)


def _fail(line: str, code: ExitCode) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(int(code)) from None


def _service_or_path_failure(err: Exception, rid: str | None) -> str | None:
    """The line for a failing database, broker or path; None for anything else."""
    # The classes are imported here rather than named in `guard`'s except clauses: that would
    # load SQLAlchemy and kombu into every command, `lusifer --help` included.
    from kombu.exceptions import OperationalError as KombuOperationalError
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(err, SQLAlchemyError):
        # A database that fails mid-run (dropped connection, full disk): the run is resumable.
        reason = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
        hint = f"`lusifer resume {rid}` continues the run" if rid else "check the database"
        return f"database error ({escape(reason)}); {hint}"
    if isinstance(err, KombuOperationalError):
        hint = f"`lusifer resume {rid}` continues the run" if rid else "check the broker"
        return f"broker error ({escape(str(err))}); {hint}"
    if isinstance(err, OSError):
        # A path that cannot be made or written (LUSIFER_WORK_DIR, an output file, a full
        # disk): one line naming it, not a traceback.
        where = escape(f" {err.filename}" if err.filename else "")
        why = escape(err.strerror or str(err))
        return (
            f"cannot use{where} ({why}); "
            "fix the path (LUSIFER_WORK_DIR for local mode) or its permissions, or free disk space"
        )
    return None


def settings_or_fail() -> Settings:
    try:
        return get_settings()
    except Exception as err:  # pydantic's ValidationError of a bad environment variable
        first = str(err).strip().splitlines()
        raise ConfigurationError(
            f"invalid LUSIFER_ environment setting: {' '.join(first[:3])}; fix the variable"
        ) from None


def column_mapping(text: str | None) -> dict[str, str]:
    """The --columns pairs ``field=column`` as a dict."""
    if not text:
        return {}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigurationError(f"--columns takes field=column pairs, got {text!r}")
    return {field.strip(): column.strip() for field, column in pairs}


def choose_dataset(
    settings: Settings,
    *,
    data_dir: Path | None,
    overviews: Path | None,
    ratings_csv: Path | None,
    items_csv: Path | None,
    users_csv: Path | None,
    columns: str | None,
    n_folds: int,
) -> tuple[DatasetConfig, tuple[str, ...]]:
    """Own CSV files when --ratings-csv or --items-csv is given, else MovieLens 100K; and
    the default folds of that data (f1..fN or u1..u5)."""
    if ratings_csv is not None or items_csv is not None:
        spec = parse_dataset_config(
            {
                "kind": "csv",
                "ratings_csv": ratings_csv,
                "items_csv": items_csv,
                "users_csv": users_csv,
                "columns": column_mapping(columns),
                "n_folds": n_folds,
            }
        )
        return spec, tuple(f"f{i}" for i in range(1, n_folds + 1))
    from coordinator.datasets import resolve_dataset_config  # numpy: after the options

    return resolve_dataset_config(data_dir, overviews, settings), MOVIELENS_FOLDS


def fold_names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """The --folds list, or the data's default folds."""
    if text is None:
        return default
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    if not names:
        raise ConfigurationError("--folds names no fold: e.g. --folds u1,u2")
    return names
