"""The `lusifer` command line."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from kombu.exceptions import OperationalError as KombuOperationalError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from coordinator.local import LOCAL_MODEL_NAME, worker_command
from coordinator.runner import report_run, resolve_dataset_config, resume_run, start_run
from coordinator.services import database_url_of
from coordinator.status import print_runs, print_status
from lusifer.config import LOCAL_BASE_URL, StructuredOutput, parse_run_config
from lusifer.db import check_database, create_tables, get_engine
from lusifer.errors import ConfigurationError, DataError, LusiferError
from lusifer.settings import Settings, get_settings

if TYPE_CHECKING:
    # The evaluation pulls in scipy, matplotlib and scikit-surprise: imported by the commands
    # that need them, so `lusifer run`, `worker` and `status` start as fast as before.
    from coordinator.evaluate import EvalOptions, Report

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
THREADS_HELP = "Local mode: threads per worker (default 1 with the local model, else 8)"
COLUMNS_HELP = (
    "Own data: our field=CSV column pairs, e.g. user_id=uid,item_id=movie,rating=stars "
    "(fields: user_id item_id rating timestamp title year genres overview age gender occupation)"
)
BASELINES_HELP = (
    "Baselines: all (default), fast (no KNN, no SVD++), none, or a list of "
    "global_mean,baseline_only,knn_baseline,svd,svdpp,nmf,als"
)
ALL_FOLDS = "u1,u2,u3,u4,u5"
DATA_DIR_HELP = (
    "ml-100k directory, or one holding ml-100k/ and tmdb/; "
    "default: LUSIFER_DATA_DIR, else downloaded from GroupLens"
)


def _guard(action: Callable[[], T], run_id: str | None = None) -> T:
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


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as err:  # pydantic's ValidationError of a bad environment variable
        first = str(err).strip().splitlines()
        raise ConfigurationError(
            f"invalid LUSIFER_ environment setting: {' '.join(first[:3])}; fix the variable"
        ) from None


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"{what} must be comma-separated integers, got {text!r}") from None


def _mapping(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigurationError(f"--columns takes field=column pairs, got {text!r}")
    return {field.strip(): column.strip() for field, column in pairs}


@app.command()
def run(
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    overviews: Annotated[Path | None, typer.Option(help="CSV with movie_id,overview")] = None,
    ratings_csv: Annotated[Path | None, typer.Option(help="Own data: ratings CSV")] = None,
    items_csv: Annotated[Path | None, typer.Option(help="Own data: items CSV")] = None,
    users_csv: Annotated[Path | None, typer.Option(help="Own data: users CSV")] = None,
    columns: Annotated[str | None, typer.Option(help=COLUMNS_HELP)] = None,
    n_folds: Annotated[int, typer.Option(help="Own data: folds f1..fN")] = 5,
    folds: Annotated[
        str | None, typer.Option(help="Comma-separated folds (default u1..u5, or f1..fN)")
    ] = None,
    users: Annotated[str | None, typer.Option(help="Comma-separated user ids")] = None,
    max_users: Annotated[int | None, typer.Option(help="First N users of each fold")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint; default: a local SmolLM2 server")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name at the endpoint")] = None,
    temperature: Annotated[float, typer.Option()] = 0.0,
    structured_output: Annotated[
        str | None, typer.Option(help="json_schema | json_object | none")
    ] = None,
    prompt_set: Annotated[
        str, typer.Option(help="Prompt set: lusifer (default) or paper")
    ] = "lusifer",
    prompts_dir: Annotated[Path | None, typer.Option(help="Own directory of prompt sets")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Test items per rating call")] = None,
    profile_history: Annotated[int, typer.Option(help="Last N training ratings")] = 40,
    profile_batch: Annotated[int, typer.Option(help="Ratings per profile step")] = 10,
    recent_k: Annotated[int, typer.Option(help="Recent rated items shown when rating")] = 10,
    max_reask: Annotated[int, typer.Option(help="Re-asks for missing items")] = 2,
    overview_chars: Annotated[int, typer.Option(help="Longest overview in prompts; 0: none")] = 600,
    price_prompt: Annotated[float, typer.Option(help="USD per 1M prompt tokens")] = 0.0,
    price_completion: Annotated[float, typer.Option(help="USD per 1M completion tokens")] = 0.0,
    run_id: Annotated[str | None, typer.Option(help="Name of the run (default: dated)")] = None,
    workers: Annotated[int, typer.Option(help="Local mode: worker processes")] = 1,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """Run phase 1 (profiles) and phase 2 (ratings) and print the metrics per fold."""
    name = run_id or f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"

    def action() -> None:
        settings = _settings()
        endpoint = base_url or settings.llm_base_url
        model_name = model or settings.llm_model
        if endpoint is None:
            endpoint, model_name = LOCAL_BASE_URL, model_name or LOCAL_MODEL_NAME
            # llama.cpp takes the schema inside json_object and turns it into a grammar.
            output: StructuredOutput | str = structured_output or "json_object"
        else:
            output = structured_output or "json_schema"
            if model_name is None:
                raise ConfigurationError("--base-url needs --model (or LUSIFER_LLM_MODEL)")
        if ratings_csv is not None or items_csv is not None:
            dataset: object = {
                "kind": "csv",
                "ratings_csv": ratings_csv,
                "items_csv": items_csv,
                "users_csv": users_csv,
                "columns": _mapping(columns),
                "n_folds": n_folds,
            }
            default_folds = ",".join(f"f{i}" for i in range(1, n_folds + 1))
        else:
            dataset = resolve_dataset_config(data_dir, overviews, settings)
            default_folds = "u1,u2,u3,u4,u5"
        config = parse_run_config(
            {
                "dataset": dataset,
                "folds": tuple(f.strip() for f in (folds or default_folds).split(",") if f.strip()),
                "users": _ints(users, "--users"),
                "max_users": max_users,
                "profile_history": profile_history,
                "profile_batch": profile_batch,
                "recent_k": recent_k,
                "chunk_size": chunk_size,
                "max_reask": max_reask,
                "overview_chars": overview_chars,
                "prompt_set": prompt_set,
                "prompts_dir": prompts_dir,
                "llm": {
                    "base_url": endpoint,
                    "model": model_name,
                    "temperature": temperature,
                    "structured_output": output,
                    "price_prompt_per_mtok": price_prompt,
                    "price_completion_per_mtok": price_completion,
                },
            }
        )
        start_run(config, name, settings, console, workers=workers, threads=threads)

    _guard(action, name)


@app.command()
def resume(
    run_id: str,
    workers: Annotated[int, typer.Option(help="Local mode: worker processes")] = 1,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """Finish an interrupted run without repeating any LLM call that succeeded."""
    _guard(
        lambda: resume_run(run_id, _settings(), console, workers=workers, threads=threads), run_id
    )


@app.command()
def status(run_id: str) -> None:
    """Show the jobs of a run by kind and state."""
    _guard(lambda: print_status(get_engine(database_url_of(_settings())), run_id, console))


JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Write every number to this JSON file")
]
HtmlOption = Annotated[
    Path | None, typer.Option("--html", help="Write one self-contained HTML page with plots")
]
ColdKOption = Annotated[int, typer.Option(help="Cold start: users with fewer training ratings")]
ResamplesOption = Annotated[int, typer.Option(help="Bootstrap resamples (of users)")]
SeedOption = Annotated[int, typer.Option(help="Seed of the baselines and the bootstrap")]


def _eval_options(methods: str | None, cold_k: int, resamples: int, seed: int) -> EvalOptions:
    from coordinator.evaluate import EvalOptions
    from lusifer.baselines import parse_methods

    if cold_k < 1 or resamples < 1:
        raise ConfigurationError("--cold-k and --resamples must be at least 1")
    return EvalOptions(parse_methods(methods), cold_k=cold_k, n_resamples=resamples, seed=seed)


def _fold_names(text: str) -> tuple[str, ...]:
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    if not names:
        raise ConfigurationError("--folds names no fold: e.g. --folds u1,u2")
    return names


def _emit(result: Report, json_file: Path | None, html: Path | None) -> None:
    """Print the evaluation tables and write the requested files."""
    from coordinator.eval_tables import print_evaluation
    from coordinator.html_report import write_html
    from coordinator.report_json import write_json

    print_evaluation(console, result)
    if json_file is not None:
        write_json(result, json_file)
        console.print(f"wrote {json_file}", highlight=False)
    if html is not None:
        write_html(result, html)
        console.print(f"wrote {html}", highlight=False)


@app.command()
def report(
    run_id: str,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    baselines: Annotated[str | None, typer.Option(help=BASELINES_HELP)] = None,
    cold_k: ColdKOption = 20,
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Print the metrics tables of a run again from the database.

    With --json, --html or --baselines: also every baseline on the same ratings, the
    cold-start slice, fidelity and the bootstrap interval.
    """

    def action() -> None:
        settings = _settings()
        report_run(run_id, settings, console)
        if json_file is not None or html is not None or baselines is not None:
            from coordinator.evaluate import evaluate_run

            options = _eval_options(baselines, cold_k, resamples, seed)
            _emit(evaluate_run(run_id, settings, options, err_console), json_file, html)

    _guard(action)


@app.command()
def compare(
    run_a: str,
    run_b: str,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Two runs side by side, and their paired difference on the ratings both answered."""

    def action() -> None:
        from coordinator.compare import compare_runs, print_comparison, write_comparison

        options = _eval_options("none", 20, resamples, seed)
        result = compare_runs(run_a, run_b, _settings(), options, err_console)
        print_comparison(console, result)
        write_comparison(result, html, json_file)
        for path in (json_file, html):
            if path is not None:
                console.print(f"wrote {path}", highlight=False)

    _guard(action)


@app.command()
def score(
    csv_file: Annotated[
        Path, typer.Argument(help="CSV: user_id,item_id,rating (or simulated_rating)[,fold]")
    ],
    folds: Annotated[
        str, typer.Option(help="Folds whose test ratings the CSV answers")
    ] = ALL_FOLDS,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    baselines: Annotated[str, typer.Option(help=BASELINES_HELP)] = "all",
    cold_k: ColdKOption = 20,
    resamples: ResamplesOption = 1000,
    seed: SeedOption = 0,
) -> None:
    """Score simulated ratings made elsewhere against the real test ratings, with baselines."""

    def action() -> None:
        from coordinator.evaluate import evaluate_csv, load_folds

        if not csv_file.is_file():
            raise DataError(f"cannot read {csv_file}: no such file; check the path")
        settings = _settings()
        names = _fold_names(folds)
        options = _eval_options(baselines, cold_k, resamples, seed)
        dataset = load_folds(data_dir, names, settings)
        result = evaluate_csv(csv_file, dataset, names, options, settings, err_console)
        _emit(result, json_file, html)

    _guard(action)


@app.command("baselines")
def baselines_command(
    folds: Annotated[str, typer.Option(help="Comma-separated folds")] = ALL_FOLDS,
    methods: Annotated[str, typer.Option(help=BASELINES_HELP)] = "all",
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    json_file: JsonOption = None,
    html: HtmlOption = None,
    cold_k: ColdKOption = 20,
    seed: SeedOption = 0,
) -> None:
    """Every baseline on the whole test set of each fold, continuous and rounded to 1..5."""

    def action() -> None:
        from coordinator.evaluate import evaluate_baselines, load_folds

        settings = _settings()
        names = _fold_names(folds)
        options = _eval_options(methods, cold_k, 1, seed)
        if not options.methods:
            raise ConfigurationError("--methods none leaves nothing to compute")
        dataset = load_folds(data_dir, names, settings)
        _emit(evaluate_baselines(dataset, names, options, settings, err_console), json_file, html)

    _guard(action)


@app.command()
def runs() -> None:
    """List the runs in the database."""
    _guard(lambda: print_runs(get_engine(database_url_of(_settings())), console))


@app.command("init-db")
def init_db() -> None:
    """Create the database tables (the one-shot step of a cluster)."""

    def action() -> None:
        engine = get_engine(database_url_of(_settings()))
        check_database(engine)
        create_tables(engine)
        console.print("tables ready")

    _guard(action)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Start a Celery worker (extra arguments go to `celery worker`)."""
    settings = _guard(_settings)
    args = [*worker_command(settings.queue, settings.worker_concurrency), *ctx.args]
    os.execv(sys.executable, args)


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    # SIGTERM would end Python without running `finally`: local mode's broker, model server
    # and workers would outlive the command. As KeyboardInterrupt it unwinds like Ctrl-C.
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the `lusifer` command."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    app()
