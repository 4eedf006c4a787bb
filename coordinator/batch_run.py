"""The Batch API driver: run jobs in collect mode, submit what they ask as one batch per
round, wait for it, and run them again until every job is done or failed.

It runs in the coordinator process, not as worker jobs. A round is a barrier: every request
of the round goes into one submission and nothing moves until the provider answers, hours
later at worst. What happens between rounds is rendering prompts and reading the call cache,
cheap next to that wait, so Celery workers would only add a second protocol and sit idle
holding leases. The database keeps the submissions and their lines, so a coordinator that
dies loses nothing: ``lusifer resume`` re-attaches to the batches in flight.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, update
from sqlmodel import col

from coordinator.follow import RunStopped
from lusifer.batchapi.client import BatchClient, BatchInfo
from lusifer.batchapi.deferred import Deferred, DeferredCalls, PendingCall
from lusifer.batchapi.lines import LineAnswer, LineError, parse_file, request_line, split_lines
from lusifer.batchapi.store import (
    next_round,
    open_batches,
    record_results,
    record_status,
    record_submission,
)
from lusifer.core.config import BatchConfig
from lusifer.core.errors import LusiferError
from lusifer.execute.settle import fail_orphans
from lusifer.execute.sync_jobs import JobOutcome, execute_profile_job, execute_rating_job
from lusifer.store.engines import session_scope
from lusifer.store.jobs import finish_job
from lusifer.store.run_states import ready_jobs, run_status, set_run_status
from lusifer.store.runs import RunContext, load_run_context
from lusifer.store.tables import Job, JobKind, JobState, LLMBatch, RunStatus


@dataclass
class BatchRunSummary:
    """What a batch run submitted."""

    rounds: int = 0
    batches: int = 0
    lines: int = 0


def _runnable(engine: Engine, run_id: str, skip: set[str]) -> list[Job]:
    """Unfinished jobs whose dependency is done (or that have none)."""
    jobs = ready_jobs(engine, run_id, (JobState.PENDING, JobState.QUEUED))
    return [job for job in jobs if job.id not in skip]


def _run_job(engine: Engine, job: Job, ctx: RunContext, calls: DeferredCalls) -> bool:
    """Run a job as far as the answers in hand take it; True when it finished."""
    execute = execute_profile_job if job.kind == JobKind.PROFILE else execute_rating_job
    try:
        outcome = execute(engine, job, ctx, calls.for_job(job.id))
    except Deferred:
        return False
    except LusiferError as err:  # a line refused, or retried past the limit: the job fails
        outcome = JobOutcome(error=str(err))
    state = JobState.FAILED if outcome.error else JobState.DONE
    finish_job(
        engine,
        job.id,
        state,
        error=outcome.error,
        raw_output=outcome.raw_output,
        reasks=outcome.reasks,
    )
    return True


def collect_pass(
    engine: Engine, run_id: str, *, max_attempts: int, price_factor: float, threads: int
) -> list[PendingCall]:
    """Run every runnable job until none moves; return the requests the next batch must ask.

    Jobs run on threads: between rounds the work is database round trips, not computing.
    """
    ctx = load_run_context(engine, run_id)
    calls = DeferredCalls(engine, run_id, max_attempts=max_attempts, price_factor=price_factor)
    waiting: set[str] = set()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="collect") as pool:
        while True:
            fail_orphans(engine, run_id)
            jobs = _runnable(engine, run_id, waiting)
            if not jobs:
                break
            finished = pool.map(lambda job: _run_job(engine, job, ctx, calls), jobs)
            waiting.update(job.id for job, done in zip(jobs, finished, strict=True) if not done)
    ids = sorted(waiting)
    with session_scope(engine) as session:  # `lusifer status` shows them as queued
        for start in range(0, len(ids), 500):  # under SQLite's limit of bound parameters
            session.execute(
                update(Job)
                .where(
                    col(Job.id).in_(ids[start : start + 500]), col(Job.state) == JobState.PENDING
                )
                .values(state=JobState.QUEUED)
            )
    return calls.pending()


def _digest(calls: Sequence[PendingCall]) -> str:
    keys = "".join(sorted(call.request.cache_key() for call in calls))
    return hashlib.sha256(keys.encode()).hexdigest()[:32]


def submit_round(
    engine: Engine,
    client: BatchClient,
    run_id: str,
    pending: Sequence[PendingCall],
    config: BatchConfig,
    console: Console,
) -> int:
    """Submit the pending requests as one batch per part; return how many batches."""
    round_ = next_round(engine, run_id)
    lines = [request_line(call.request) for call in pending]
    by_line = dict(zip(lines, pending, strict=True))
    parts = split_lines(lines, config.max_lines, config.max_bytes)
    for part, part_lines in enumerate(parts):
        calls = [by_line[line] for line in part_lines]
        metadata = {
            "lusifer_run": run_id[:500],
            "lusifer_round": str(round_),
            "lusifer_part": str(part),
            "lusifer_lines": _digest(calls),
        }
        # A batch accepted just before a crash, but never stored, is adopted, not paid twice.
        info = client.find(metadata) or client.submit(
            b"".join(part_lines), metadata, config.completion_window
        )
        record_submission(engine, run_id, info, round_, part, calls)
        console.print(
            f"round {round_ + 1}: batch {info.id} with {len(calls)} requests ({info.status})"
        )
    return len(parts)


def await_batches(
    engine: Engine,
    client: BatchClient,
    batches: Sequence[LLMBatch],
    poll_s: float,
    console: Console,
) -> None:
    """Poll batches until each has finished, then read their output and error files."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed · {task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        tasks = {
            b.id: progress.add_task(
                f"round {b.round + 1} batch {b.part + 1}",
                total=b.line_count,
                failed=0,
                status=b.status,
            )
            for b in batches
        }
        waiting = {b.id for b in batches}
        while waiting:
            for batch_id in sorted(waiting):
                info = client.retrieve(batch_id)
                progress.update(
                    tasks[batch_id],
                    completed=info.completed + info.failed,
                    failed=info.failed,
                    status=info.status,
                )
                if info.finished:
                    _collect(engine, client, info)
                    progress.update(tasks[batch_id], completed=info.total or None)
                    waiting.discard(batch_id)
                else:
                    record_status(engine, info)
            if waiting:
                time.sleep(poll_s)


def _collect(engine: Engine, client: BatchClient, info: BatchInfo) -> None:
    results: list[LineAnswer | LineError] = []
    for file_id in (info.output_file_id, info.error_file_id):
        if file_id:
            results.extend(parse_file(client.download(file_id)))
    record_results(engine, info, results)


def drive_batch_run(
    engine: Engine,
    client: BatchClient,
    run_id: str,
    config: BatchConfig,
    console: Console,
    *,
    max_attempts: int,
    threads: int = 8,
    poll_s: float | None = None,
) -> BatchRunSummary:
    """Take a run to its end through the Batch API, re-attaching to batches in flight."""
    summary = BatchRunSummary()
    price_factor = 1.0 - config.discount
    while True:
        in_flight = open_batches(engine, run_id)
        if in_flight:
            await_batches(engine, client, in_flight, poll_s or config.poll_s, console)
        if run_status(engine, run_id) == RunStatus.FAILED:
            raise RunStopped(f"run {run_id} was stopped; `lusifer resume {run_id}` continues it")
        with console.status(f"running the jobs of run {run_id} on the answers in hand"):
            pending = collect_pass(
                engine,
                run_id,
                max_attempts=max_attempts,
                price_factor=price_factor,
                threads=threads,
            )
        if not pending:
            set_run_status(engine, run_id, RunStatus.DONE)
            return summary
        summary.rounds += 1
        summary.lines += len(pending)
        summary.batches += submit_round(engine, client, run_id, pending, config, console)
