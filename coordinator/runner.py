"""Running, resuming and reporting a run: the coordinator's main flows."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from coordinator.aggregate import aggregate_run
from coordinator.batch_run import drive_batch_run
from coordinator.database_url import database_url_of
from coordinator.datasets import load_dataset
from coordinator.estimate import estimate_plan, print_estimate
from coordinator.follow import follow, raise_if_jobs_failed
from coordinator.plan import Plan, describe_plan, plan_run, store_plan
from coordinator.report.terminal import print_report
from coordinator.run_lock import hold_run
from coordinator.services import Services, preflight_llm, run_services
from lusifer.batchapi.client import BatchClient
from lusifer.batchapi.store import open_batches
from lusifer.core.config import LOCAL_BASE_URL, RunConfig, parse_run_config
from lusifer.core.errors import ConfigurationError, DataError
from lusifer.core.settings import Settings
from lusifer.data import Dataset
from lusifer.llm.endpoints import api_key
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import (
    check_database,
    create_tables,
    get_engine,
    redact_url,
    require_tables,
    session_scope,
)
from lusifer.store.run_states import reset_unfinished, set_run_status
from lusifer.store.tables import Run, RunStatus


def start_run(
    config: RunConfig,
    run_id: str,
    settings: Settings,
    console: Console,
    *,
    workers: int,
    threads: int | None,
    max_cost: float | None = None,
    dry_run: bool = False,
) -> None:
    """Plan, enqueue and follow a new run, then print its report (or only its estimate)."""
    dataset = load_dataset(config)
    prompts = load_prompt_set(config.prompt_set, config.prompts_dir)
    plan = plan_run(run_id, config, dataset, prompts)
    plan.run["max_cost_usd"] = max_cost
    console.print(f"[bold]run {run_id}[/]: {describe_plan(plan)}")
    console.print(
        f"prompt set {prompts.name} v{prompts.version} ({prompts.content_hash}), "
        f"model {config.llm.model}"
    )
    if dry_run:
        # Before any service: no broker, database or model server is started or touched.
        print_estimate(console, run_id, config, estimate_plan(plan, config, dataset, prompts))
        return
    if config.batch is not None:
        _start_batch_run(config, run_id, plan, dataset, settings, console)
        return
    with (
        run_services(settings, config, workers=workers, threads=threads) as services,
        hold_run(services.engine, run_id),
    ):
        _require_new(services.engine, run_id)
        store_plan(services.engine, plan, dataset)
        set_run_status(services.engine, run_id, RunStatus.RUNNING)
        _follow_and_report(services, run_id, config, settings, console)


def _require_new(engine: Engine, run_id: str) -> None:
    with Session(engine) as session:
        if session.get(Run, run_id) is not None:
            raise ConfigurationError(
                f"run {run_id!r} already exists: `lusifer resume {run_id}` finishes it, "
                "or choose another --run-id"
            )


def _batch_engine(config: RunConfig, settings: Settings) -> tuple[Engine, BatchClient]:
    """Batch mode needs the database and the endpoint only: no broker, no workers."""
    if config.llm.base_url == LOCAL_BASE_URL:
        raise ConfigurationError(
            "--batch-api needs an endpoint with the OpenAI Batch API: pass --base-url and --model"
        )
    if not settings.database_url:  # local mode's SQLite file
        Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    engine = get_engine(database_url_of(settings))
    check_database(engine)
    # The endpoint before the first write: a wrong URL or key leaves no tables behind.
    preflight_llm(config.llm.base_url, config.llm.model, settings)
    create_tables(engine)
    client = BatchClient(
        config.llm.base_url,
        api_key(settings),
        timeout_s=600.0,  # uploads of up to 200 MB
        attempts=settings.llm_attempts,
        backoff_max_s=settings.llm_backoff_max_s,
    )
    return engine, client


def _start_batch_run(
    config: RunConfig,
    run_id: str,
    plan: Plan,
    dataset: Dataset,
    settings: Settings,
    console: Console,
) -> None:
    engine, client = _batch_engine(config, settings)
    with hold_run(engine, run_id):
        _require_new(engine, run_id)
        store_plan(engine, plan, dataset)
        set_run_status(engine, run_id, RunStatus.RUNNING)
        _drive_and_report(engine, client, run_id, config, settings, console, None)


def _resume_batch_run(
    config: RunConfig, run_id: str, settings: Settings, console: Console, *, poll_s: float | None
) -> None:
    engine, client = _batch_engine(config, settings)
    with hold_run(engine, run_id):
        reopened = reset_unfinished(engine, run_id, include_running=True)
        in_flight = len(open_batches(engine, run_id))
        console.print(
            f"[bold]resuming run {run_id}[/]: {reopened} unfinished jobs, "
            f"{in_flight} batches in flight re-attached"
        )
        _drive_and_report(engine, client, run_id, config, settings, console, poll_s)


def _drive_and_report(
    engine: Engine,
    client: BatchClient,
    run_id: str,
    config: RunConfig,
    settings: Settings,
    console: Console,
    poll_s: float | None,
) -> None:
    assert config.batch is not None
    summary = drive_batch_run(
        engine,
        client,
        run_id,
        config.batch,
        console,
        max_attempts=settings.llm_attempts,
        threads=settings.worker_concurrency,
        poll_s=poll_s,
    )
    console.print(
        f"batch api: {summary.rounds} rounds, {summary.batches} batches, "
        f"{summary.lines} requests submitted by this command"
    )
    results = aggregate_run(engine, run_id, config.folds)
    print_report(console, run_id, results, _header(config))
    raise_if_jobs_failed(engine, run_id)


def _header(config: RunConfig) -> str:
    return f"prompt set {config.prompt_set}, model {config.llm.model}"


def follow_run(services: Services, run_id: str, settings: Settings, console: Console) -> None:
    """Follow a run to its end with the settings' leases, outage and stall bounds."""
    follow(
        services.engine,
        services.app,
        run_id,
        services.queue,
        console,
        lease_s=settings.job_lease_s,
        requeue_grace_s=settings.requeue_grace_s,
        health_check=services.health_check,
        db_outage_s=settings.db_outage_s,
        stall_warn_s=settings.stall_warn_s,
        stall_give_up_s=settings.stall_give_up_s,
    )


def _follow_and_report(
    services: Services, run_id: str, config: RunConfig, settings: Settings, console: Console
) -> None:
    """Follow a run to its end, then print its tables."""
    follow_run(services, run_id, settings, console)
    results = aggregate_run(services.engine, run_id, config.folds)
    print_report(console, run_id, results, _header(config))
    raise_if_jobs_failed(services.engine, run_id)


def stored_config(settings: Settings, run_id: str) -> RunConfig:
    """The configuration a run was started with."""
    engine = get_engine(database_url_of(settings, create=False))
    require_tables(engine)
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise DataError(
                f"run {run_id!r} is not in {redact_url(database_url_of(settings))}; check the id "
                "(`lusifer runs` lists them) and LUSIFER_DATABASE_URL"
            )
        return parse_run_config(json.loads(run.config_json))


def resume_run(
    run_id: str,
    settings: Settings,
    console: Console,
    *,
    workers: int,
    threads: int | None,
    max_cost: float | None = None,
    poll_s: float | None = None,
) -> None:
    """Finish an interrupted run; calls that already succeeded come from the cache."""
    config = stored_config(settings, run_id)
    priced = config.llm.price_prompt_per_mtok or config.llm.price_completion_per_mtok
    if max_cost is not None and not priced:
        raise ConfigurationError(
            f"run {run_id!r} was started without prices (--price-prompt, --price-completion), "
            "so its spend stays $0 and --max-cost cannot stop it; resume without --max-cost"
        )
    if config.batch is not None:
        _resume_batch_run(config, run_id, settings, console, poll_s=poll_s)
        return
    with (
        run_services(settings, config, workers=workers, threads=threads) as services,
        hold_run(services.engine, run_id),
    ):
        if max_cost is not None:
            set_max_cost(services.engine, run_id, max_cost)
        reopened = reset_unfinished(
            services.engine, run_id, include_running=services.health_check is not None
        )
        console.print(f"[bold]resuming run {run_id}[/]: {reopened} unfinished jobs sent again")
        _follow_and_report(services, run_id, config, settings, console)


def set_max_cost(engine: Engine, run_id: str, max_cost: float) -> None:
    """Give a run a new cost cap (a resume with a higher --max-cost)."""
    with session_scope(engine) as session:
        session.execute(update(Run).where(col(Run.id) == run_id).values(max_cost_usd=max_cost))


def report_run(run_id: str, settings: Settings, console: Console) -> None:
    """Print the tables of a run again from the database."""
    config = stored_config(settings, run_id)
    engine = get_engine(database_url_of(settings))
    results = aggregate_run(engine, run_id, config.folds)
    print_report(console, run_id, results, _header(config))
