"""The `lusifer` command line.

The commands import what they run (the runner, the database, the services) in their bodies:
`lusifer --help` and a command refused for its arguments end before any of it is loaded.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coordinator.cli.common import (
    ColumnsOption,
    DataDirOption,
    ItemsCsvOption,
    NFoldsOption,
    RatingsCsvOption,
    UsersCsvOption,
    app,
    choose_dataset,
    console,
    fold_names,
    guard,
    settings_or_fail,
)
from coordinator.local import LOCAL_MODEL_NAME, worker_command
from lusifer.core.config import LOCAL_BASE_URL, StructuredOutput, parse_run_config
from lusifer.core.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import Engine

THREADS_HELP = (
    "Local mode: threads per worker, i.e. LLM calls in flight "
    "(default 1 with the local model, else LUSIFER_WORKER_CONCURRENCY, 80)"
)
MAX_COST_HELP = (
    "Stop calling the LLM when the run's recorded spend (at --price-*) reaches this many USD; "
    "the run stays resumable"
)
BATCH_API_HELP = (
    "Send the LLM calls through the OpenAI Batch API (half the price, answers within 24 h); "
    "needs no broker or workers"
)

# A run id is part of every job id (run/fold/user/kind) and of lock and file names, and is
# printed everywhere: letters, digits and a few separators only.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def check_run_id(run_id: str) -> None:
    """Refuse a run id that could not serve as part of a job id, with the rule."""
    if not RUN_ID.fullmatch(run_id):
        raise ConfigurationError(
            f"--run-id {run_id!r} may hold letters, digits and . _ : - (at most 100, starting "
            "with a letter or digit); choose another"
        )


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"{what} must be comma-separated integers, got {text!r}") from None


@app.command()
def run(
    data_dir: DataDirOption = None,
    overviews: Annotated[Path | None, typer.Option(help="CSV with movie_id,overview")] = None,
    ratings_csv: RatingsCsvOption = None,
    items_csv: ItemsCsvOption = None,
    users_csv: UsersCsvOption = None,
    columns: ColumnsOption = None,
    n_folds: NFoldsOption = 5,
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
    llm_timeout: Annotated[
        float, typer.Option(help="Seconds before an LLM call counts as timed out (retried)")
    ] = 120.0,
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
    rpm: Annotated[
        int | None, typer.Option(help="Requests per minute to the endpoint, for all workers")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option(help="Tokens per minute to the endpoint, for all workers")
    ] = None,
    rate_window: Annotated[
        float, typer.Option(help="Seconds the --rpm/--tpm limits count over (60: per minute)")
    ] = 60.0,
    batch_api: Annotated[bool, typer.Option(help=BATCH_API_HELP)] = False,
    batch_discount: Annotated[
        float, typer.Option(help="Batch API: share of the online price saved (OpenAI: 0.5)")
    ] = 0.5,
    batch_poll_s: Annotated[
        float, typer.Option(help="Batch API: seconds between status polls")
    ] = 30.0,
    run_id: Annotated[str | None, typer.Option(help="Name of the run (default: dated)")] = None,
    workers: Annotated[int, typer.Option(help="Local mode: worker processes")] = 1,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    max_cost: Annotated[float | None, typer.Option(help=MAX_COST_HELP, min=0.0)] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan with estimated tokens and cost; call and write nothing",
        ),
    ] = False,
) -> None:
    """Run phase 1 (profiles) and phase 2 (ratings) and print the metrics per fold."""
    name = run_id or f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"

    def action() -> None:
        check_run_id(name)
        settings = settings_or_fail()
        endpoint = base_url or settings.llm_base_url
        model_name = model or settings.llm_model
        if endpoint is None and batch_api:
            raise ConfigurationError(
                "--batch-api needs an endpoint with the OpenAI Batch API: "
                "pass --base-url and --model"
            )
        if endpoint is None:
            endpoint, model_name = LOCAL_BASE_URL, model_name or LOCAL_MODEL_NAME
            # llama.cpp takes the schema inside json_object and turns it into a grammar.
            output: StructuredOutput | str = structured_output or "json_object"
        else:
            output = structured_output or "json_schema"
            if model_name is None:
                raise ConfigurationError("--base-url needs --model (or LUSIFER_LLM_MODEL)")
        if max_cost is not None and batch_api:
            raise ConfigurationError(
                "--max-cost watches online calls one by one; a --batch-api run submits them "
                "in batches: use --dry-run to see its cost first"
            )
        if max_cost is not None and price_prompt == 0 and price_completion == 0:
            raise ConfigurationError(
                "--max-cost counts spend at the configured prices: "
                "also pass --price-prompt and --price-completion"
            )
        dataset, default_folds = choose_dataset(
            settings,
            data_dir=data_dir,
            overviews=overviews,
            ratings_csv=ratings_csv,
            items_csv=items_csv,
            users_csv=users_csv,
            columns=columns,
            n_folds=n_folds,
        )
        config = parse_run_config(
            {
                "dataset": dataset,
                "folds": fold_names(folds, default_folds),
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
                    "timeout_s": llm_timeout,
                    "structured_output": output,
                    "price_prompt_per_mtok": price_prompt,
                    "price_completion_per_mtok": price_completion,
                    "rpm": rpm,
                    "tpm": tpm,
                    "rate_window_s": rate_window,
                },
                "batch": (
                    {"discount": batch_discount, "poll_s": batch_poll_s} if batch_api else None
                ),
            }
        )
        from coordinator.runner import start_run

        start_run(
            config,
            name,
            settings,
            console,
            workers=workers,
            threads=threads,
            max_cost=max_cost,
            dry_run=dry_run,
        )

    guard(action, name)


@app.command()
def resume(
    run_id: str,
    workers: Annotated[int, typer.Option(help="Local mode: worker processes")] = 1,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="A new cost cap in USD (a run stopped at its cap)", min=0.0)
    ] = None,
    batch_poll_s: Annotated[
        float | None, typer.Option(help="Batch API runs: seconds between status polls")
    ] = None,
) -> None:
    """Finish an interrupted run without repeating any LLM call that succeeded."""

    def action() -> None:
        from coordinator.runner import resume_run

        resume_run(
            run_id,
            settings_or_fail(),
            console,
            workers=workers,
            threads=threads,
            max_cost=max_cost,
            poll_s=batch_poll_s,
        )

    guard(action, run_id)


@app.command()
def status(run_id: str) -> None:
    """Show the jobs of a run by kind and state."""

    def action() -> None:
        engine = _existing_database()
        from coordinator.status import print_status  # once a database is found

        print_status(engine, run_id, console)

    guard(action)


@app.command()
def runs() -> None:
    """List the runs in the database."""

    def action() -> None:
        engine = _existing_database()
        from coordinator.status import print_runs  # once there is a database to list

        print_runs(engine, console)

    guard(action)


def _existing_database() -> Engine:
    """The database of the runs, for commands that only read: never created here."""
    from coordinator.database_url import database_url_of

    url = database_url_of(settings_or_fail(), create=False)
    # Imported once there is a database to read: a work directory without one is refused
    # in one line before SQLAlchemy and the tables are loaded.
    from lusifer.store.engines import get_engine

    return get_engine(url)


@app.command("init-db")
def init_db() -> None:
    """Create the database schema, or upgrade an older one (the one-shot step of a cluster)."""

    def action() -> None:
        from coordinator.database_url import database_url_of
        from lusifer.store.engines import check_database, create_tables, get_engine

        engine = get_engine(database_url_of(settings_or_fail()))
        check_database(engine)
        outcome = create_tables(engine)
        if outcome.adopted:
            console.print("found tables made before schema migrations: adopted them at 0001")
        if outcome.changed:
            console.print(f"schema upgraded from {outcome.before or 'empty'} to {outcome.after}")
        console.print(f"tables ready (schema revision {outcome.after})")

    guard(action)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Start a Celery worker (extra arguments go to `celery worker`)."""
    settings = guard(settings_or_fail)
    args = [*worker_command(settings.queue, settings.worker_concurrency), *ctx.args]
    os.execv(sys.executable, args)


# Registered after run, resume and status so that `lusifer --help` lists them in that order.
import coordinator.cli.database  # noqa: E402  (import-sqlite)
import coordinator.cli.evaluate  # noqa: E402, F401  (report, compare, score, baselines)
from coordinator.cli import export as _export  # noqa: E402, F401  (export)
from coordinator.cli import metrics as _metrics  # noqa: E402, F401  (metrics)


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    # SIGTERM would end Python without running `finally`: local mode's broker, model server
    # and workers would outlive the command. As KeyboardInterrupt it unwinds like Ctrl-C.
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the `lusifer` command."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    app()
