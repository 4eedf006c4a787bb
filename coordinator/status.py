"""`lusifer status` and `lusifer runs`: what the database says about runs and their jobs."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from lusifer.batchapi.store import open_batches
from lusifer.core.errors import DataError
from lusifer.store.engines import require_tables
from lusifer.store.run_states import job_counts
from lusifer.store.tables import Job, JobState, Run

STATES = (JobState.PENDING, JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED)


def print_status(engine: Engine, run_id: str, console: Console, failures: int = 5) -> None:
    """Job counts by kind and state, the run's status, and the first failures."""
    require_tables(engine)
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise DataError(f"run {run_id!r} is not in the database; `lusifer runs` lists runs")
        failed = session.exec(
            select(Job.id, Job.error)
            .where(Job.run_id == run_id, Job.state == JobState.FAILED)
            .order_by(col(Job.id))
            .limit(failures)
        ).all()
    table = Table(title=f"run {escape(run_id)}: {run.status}", title_justify="left")
    table.add_column("jobs")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_column("total", justify="right")
    for kind, states in sorted(job_counts(engine, run_id).items()):
        table.add_row(kind, *(str(states.get(s, 0)) for s in STATES), str(sum(states.values())))
    console.print(table)
    for batch in open_batches(engine, run_id):
        console.print(
            f"batch api: round {batch.round + 1} batch {batch.id} ({batch.line_count} requests) "
            f"is {batch.status}; `lusifer resume {escape(run_id)}` waits for it"
        )
    if run.error:
        console.print(f"[red]stopped:[/] {escape(run.error)}")
    for job_id, error in failed:
        console.print(f"[yellow]failed[/] {escape(job_id)}: {escape(error or '')}")


def print_runs(engine: Engine, console: Console) -> None:
    """Every run in the database, newest first."""
    require_tables(engine)
    with Session(engine) as session:
        runs = session.exec(select(Run).order_by(col(Run.created_at).desc())).all()
    table = Table(title="runs", title_justify="left")
    for name in ("run", "created", "finished", "status", "prompt set", "prompt hash"):
        table.add_column(name)
    for run in runs:
        table.add_row(
            Text(run.id),
            f"{run.created_at:%Y-%m-%d %H:%M}",
            "" if run.finished_at is None else f"{run.finished_at:%Y-%m-%d %H:%M}",
            run.status,
            f"{run.prompt_set} v{run.prompt_version}",
            run.prompt_hash,
        )
    console.print(table)
