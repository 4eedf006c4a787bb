"""Where baseline predictions come from: the workers, the database, or this process.

With a broker configured (cluster mode) every (fold, method) is a job on the same workers as
the simulation: the fold's split and the jobs are stored, job ids are queued, and the
predictions are read back from the database once the workers are done. Otherwise the
predictions a worker stored earlier are read from the database when there, and the rest are
fitted in this process (and kept in the disk cache).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from celery import Celery
from numpy.typing import NDArray
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator.baseline_cache import cached_predictions
from coordinator.services import check_broker
from lusifer.core.errors import ConfigurationError, DataError
from lusifer.core.settings import Settings
from lusifer.data import Fold
from lusifer.evaluate.baseline_jobs import baseline_run_id, fold_digest, plan_baseline_jobs
from lusifer.evaluate.baseline_jobs import stored_predictions as stored_in_database
from lusifer.queue import make_celery, send_jobs
from lusifer.store.engines import check_database, create_tables, get_engine
from lusifer.store.jobs import release_stale, take_for_queue
from lusifer.store.tables import Job, JobState

Floats = NDArray[np.float64]

WORKERS = "workers (database)"
DATABASE = "database"
IN_PROCESS = "this process"


@dataclass(frozen=True)
class FoldBaselines:
    """Every method's continuous predictions of each fold's whole test set, in test order."""

    by_fold: dict[str, dict[str, Floats]]
    source: str  # WORKERS, DATABASE, IN_PROCESS, or "database + this process"


def baseline_predictions(
    folds: Sequence[Fold],
    dataset_fingerprint: str,
    methods: Sequence[str],
    *,
    seed: int,
    settings: Settings,
    engine: Engine | None = None,
    progress: Console | None = None,
) -> FoldBaselines:
    """Predictions of ``methods`` for each fold: on the workers when a broker is configured."""
    if not methods or not folds:
        return FoldBaselines({f.name: {} for f in folds}, IN_PROCESS)
    if settings.broker_url:
        cluster = _cluster_engine(settings)
        app = make_celery(settings)
        check_broker(app, settings.broker_url)
        run_on_workers(
            cluster,
            app,
            settings.queue,
            folds,
            dataset_fingerprint,
            methods,
            seed=seed,
            lease_s=settings.job_lease_s,
            progress=progress,
        )
        by_fold = {f.name: stored_in_database(cluster, f, methods, seed) for f in folds}
        for fold in folds:
            missing = [m for m in methods if m not in by_fold[fold.name]]
            if missing:
                raise DataError(
                    f"{fold.name}: the workers finished but stored no predictions of "
                    f"{', '.join(missing)}; run the command again"
                )
        return FoldBaselines(by_fold, WORKERS)
    return _local(folds, methods, seed, settings, engine, progress)


def _cluster_engine(settings: Settings) -> Engine:
    if not settings.database_url:
        raise ConfigurationError(
            "LUSIFER_BROKER_URL is set but LUSIFER_DATABASE_URL is not: workers fit the "
            "baselines from the shared database; set LUSIFER_DATABASE_URL"
        )
    engine = get_engine(settings.database_url)
    check_database(engine)
    create_tables(engine)
    return engine


def _local(
    folds: Sequence[Fold],
    methods: Sequence[str],
    seed: int,
    settings: Settings,
    engine: Engine | None,
    progress: Console | None,
) -> FoldBaselines:
    by_fold: dict[str, dict[str, Floats]] = {}
    n_stored = 0
    for fold in folds:
        stored = stored_in_database(engine, fold, methods, seed) if engine is not None else {}
        n_stored += len(stored)
        rest = [m for m in methods if m not in stored]
        fitted = cached_predictions(
            fold,
            rest,
            seed=seed,
            cache_dir=Path(settings.cache_dir) / "baselines",
            progress=progress,
        )
        by_fold[fold.name] = {m: stored[m] if m in stored else fitted[m] for m in methods}
    total = len(folds) * len(methods)
    source = DATABASE if n_stored == total else IN_PROCESS if n_stored == 0 else None
    return FoldBaselines(by_fold, source or f"{DATABASE} + {IN_PROCESS}")


def _states(engine: Engine, job_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    with Session(engine) as session:
        rows = session.exec(
            select(Job.id, Job.state, Job.error).where(col(Job.id).in_(list(job_ids)))
        ).all()
    return {job_id: (state, error) for job_id, state, error in rows}


def run_on_workers(
    engine: Engine,
    app: Celery,
    queue: str,
    folds: Sequence[Fold],
    dataset_fingerprint: str,
    methods: Sequence[str],
    *,
    seed: int,
    lease_s: float,
    progress: Console | None = None,
    poll_s: float = 0.5,
) -> list[str]:
    """Store the folds' splits and baseline jobs, queue the unfinished ones, wait for them.

    Done jobs are kept (their predictions are stored); queued ones are sent again, since a
    message may have been lost with a broker, and a duplicate is skipped by the worker's
    claim. Failed jobs are tried once more. Returns the job ids.
    """
    job_ids: list[str] = []
    for fold in folds:
        job_ids += plan_baseline_jobs(engine, fold, dataset_fingerprint, methods, seed)
    unfinished = [JobState.PENDING, JobState.QUEUED, JobState.FAILED]
    send_jobs(app, take_for_queue(engine, job_ids, unfinished), queue)
    pseudo_runs = {baseline_run_id(fold_digest(f)) for f in folds}
    shown, last_sweep = -1, time.monotonic()
    while True:
        states = _states(engine, job_ids)
        finished = [j for j, (s, _) in states.items() if s in (JobState.DONE, JobState.FAILED)]
        if progress is not None and len(finished) != shown:
            shown = len(finished)
            progress.print(
                f"  baselines on the workers (queue {queue}): {shown}/{len(job_ids)} jobs done",
                highlight=False,
            )
        if len(finished) == len(job_ids):
            break
        if time.monotonic() - last_sweep > min(60.0, lease_s / 4):
            # A worker that died mid-fit leaves its job running: past the lease it is sent again.
            for run_id in pseudo_runs:
                release_stale(engine, run_id, lease_s)
            send_jobs(app, take_for_queue(engine, job_ids, [JobState.PENDING]), queue)
            last_sweep = time.monotonic()
        time.sleep(poll_s)
    failed = [(j, error) for j, (s, error) in states.items() if s == JobState.FAILED]
    if failed:
        job_id, error = failed[0]
        raise DataError(
            f"{len(failed)} baseline job(s) failed on the workers, e.g. {job_id}: {error}; "
            "see the worker log, then run the command again"
        )
    return job_ids
