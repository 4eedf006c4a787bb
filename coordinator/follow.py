"""Following a run: enqueue what is ready, show progress, notice the end — all from the database."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from coordinator.lost import resend_lost
from lusifer.db import session_scope
from lusifer.dispatch import BROKER_ERRORS, ping_broker, take_and_send
from lusifer.errors import LusiferError
from lusifer.jobstore import release_stale
from lusifer.tables import Job, JobKind, JobState, Run, utcnow


class RunStopped(LusiferError):
    """The run was stopped by a permanent failure (the message says which)."""


class CostCapReached(LusiferError):
    """The run's recorded spend reached its ``--max-cost``; it is left resumable."""


def over_budget(run: Run) -> bool:
    """Whether a run has spent its cost cap."""
    return run.max_cost_usd is not None and run.spent_usd >= run.max_cost_usd


def _cap_message(engine: Engine, run_id: str, unfinished: int) -> str:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        spent, cap = (run.spent_usd, run.max_cost_usd or 0.0) if run else (0.0, 0.0)
    return (
        f"run {run_id} stopped at its cost cap: spent ${spent:.4f} of ${cap:.4f} with "
        f"{unfinished} jobs left; `lusifer resume {run_id} --max-cost HIGHER` continues it"
    )


def job_counts(engine: Engine, run_id: str) -> dict[str, dict[str, int]]:
    """Number of jobs per kind and state."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with Session(engine) as session:
        rows = session.exec(
            select(Job.kind, Job.state, func.count())
            .where(Job.run_id == run_id)
            .group_by(col(Job.kind), col(Job.state))
        ).all()
    for kind, state, n in rows:
        counts[kind][state] = int(n)
    return counts


def ready_job_ids(engine: Engine, run_id: str) -> list[str]:
    """Pending jobs whose dependency is done (or that have none)."""
    with Session(engine) as session:
        done = select(Job.id).where(Job.run_id == run_id, Job.state == JobState.DONE)
        rows = session.exec(
            select(Job.id)
            .where(Job.run_id == run_id, Job.state == JobState.PENDING)
            .where(col(Job.depends_on).is_(None) | col(Job.depends_on).in_(done))
            .order_by(col(Job.kind), col(Job.id))
        ).all()
    return list(rows)


def enqueue_ready(engine: Engine, app: Celery, run_id: str, queue: str) -> int:
    """Queue every ready job of a run that nobody queued yet; return how many."""
    return take_and_send(engine, app, ready_job_ids(engine, run_id), queue, [JobState.PENDING])


def reset_unfinished(engine: Engine, run_id: str, *, include_running: bool) -> int:
    """Put queued and failed jobs of a run back to pending, for resume.

    Running jobs are included only when no worker can still hold them (local mode starts new
    workers); in a cluster they are left to their lease.
    """
    states = [JobState.QUEUED, JobState.FAILED] + ([JobState.RUNNING] if include_running else [])
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(col(Job.run_id) == run_id, col(Job.state).in_(states))
            .values(state=JobState.PENDING, error=None)
        )
        session.execute(
            update(Run).where(col(Run.id) == run_id).values(status="running", error=None)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def set_run_status(engine: Engine, run_id: str, status: str) -> None:
    """Record the status of a run, and when it finished if it did."""
    finished_at = utcnow() if status in ("done", "failed") else None
    with session_scope(engine) as session:
        session.execute(
            update(Run).where(col(Run.id) == run_id).values(status=status, finished_at=finished_at)
        )


@dataclass
class _Dispatcher:
    """Sends ready jobs and re-sends lost ones; rides out a broker outage with a message."""

    engine: Engine
    app: Celery
    run_id: str
    queue: str
    console: Console
    grace_s: float
    down_since: float | None = None
    last_lost_check: float = 0.0

    def tick(self) -> None:
        """One round of sending; a broker error is reported once and retried next round."""
        now = time.monotonic()
        try:
            if self.down_since is not None:
                # A round with nothing to send proves nothing: ask the broker itself.
                ping_broker(self.app)
                self.console.print(
                    f"[green]broker reachable again[/] after {now - self.down_since:.0f} s; "
                    f"jobs it lost are sent again after {self.grace_s:g} s"
                )
                self.down_since = None
            enqueue_ready(self.engine, self.app, self.run_id, self.queue)
            if now - self.last_lost_check > max(1.0, min(30.0, self.grace_s / 2)):
                self.last_lost_check = now
                resent = resend_lost(self.engine, self.app, self.run_id, self.queue, self.grace_s)
                if resent:
                    self.console.print(
                        f"sent {resent} queued jobs again: the broker no longer held their "
                        f"messages after {self.grace_s:g} s"
                    )
        except BROKER_ERRORS as err:
            if self.down_since is None:
                self.down_since = now
                reason = " ".join(str(err).split())[:200] or type(err).__name__
                self.console.print(
                    f"[yellow]broker unreachable ({reason}); following the run from the "
                    "database and retrying[/]"
                )


class _RateColumn(ProgressColumn):
    """Jobs per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed and task.completed:
            speed = task.completed / task.elapsed  # rich's window is too short for slow jobs
        return Text("–/s" if speed is None else f"{speed:.2f}/s", style="progress.data.speed")


def follow(
    engine: Engine,
    app: Celery,
    run_id: str,
    queue: str,
    console: Console,
    *,
    lease_s: float,
    requeue_grace_s: float,
    poll_s: float = 0.25,
    health_check: Callable[[], None] | None = None,
    cap_grace_s: float = 10.0,
) -> None:
    """Enqueue ready jobs and show progress until every job is done or failed, or the run's
    spend reaches its cost cap (``CostCapReached``)."""
    dispatcher = _Dispatcher(engine, app, run_id, queue, console, requeue_grace_s)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        bars = {
            kind: progress.add_task(label, total=None, failed=0)
            for kind, label in ((JobKind.PROFILE, "profiles"), (JobKind.RATING, "ratings"))
        }
        last_sweep = 0.0
        capped_at: float | None = None
        while True:
            if time.monotonic() - last_sweep > min(60.0, lease_s / 4):
                # Jobs orphaned by a dead worker go back to pending and are sent again.
                release_stale(engine, run_id, lease_s)
                last_sweep = time.monotonic()
            with Session(engine) as session:
                run = session.get(Run, run_id)
                if run is not None and run.status == "failed":
                    raise RunStopped(f"run {run_id} stopped: {run.error}")
            capped = run is not None and over_budget(run)
            if not capped:
                dispatcher.tick()
            counts = job_counts(engine, run_id)
            unfinished = 0
            for kind, bar in bars.items():
                states = counts.get(kind, {})
                total = sum(states.values())
                finished = states.get(JobState.DONE, 0) + states.get(JobState.FAILED, 0)
                unfinished += total - finished
                progress.update(
                    bar, total=total, completed=finished, failed=states.get(JobState.FAILED, 0)
                )
            if unfinished == 0:
                set_run_status(engine, run_id, "done")
                return
            if capped:
                capped_at = capped_at or time.monotonic()
                running = sum(c.get(JobState.RUNNING, 0) for c in counts.values())
                queued = sum(c.get(JobState.QUEUED, 0) for c in counts.values())
                # Stop once the calls in flight have landed and the workers have handed back
                # the jobs still queued (or have had time to); the rest waits for a higher cap.
                if running == 0 and (queued == 0 or time.monotonic() - capped_at > cap_grace_s):
                    set_run_status(engine, run_id, "capped")
                    raise CostCapReached(_cap_message(engine, run_id, unfinished))
            if health_check is not None:
                health_check()
            time.sleep(poll_s)
