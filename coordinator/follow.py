"""Following a run: enqueue what is ready, show progress, notice the end — all from the database."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from coordinator.dispatch import BROKER_ERRORS, ping_broker, take_and_send
from coordinator.lost import resend_lost
from coordinator.stall import StallWatch
from lusifer.core.errors import ExitCode, LusiferError
from lusifer.store.jobs import release_stale
from lusifer.store.run_states import job_counts, ready_job_ids, set_run_status
from lusifer.store.tables import JobKind, JobState, Run, RunStatus
from lusifer.store.vacuum import vacuum_queue_tables

# What a database that went away raises, through psycopg or SQLite ("database is locked").
DATABASE_ERRORS = (OperationalError, InterfaceError)


class RunStopped(LusiferError):
    """The run was stopped by a permanent failure (the message says which)."""

    exit_code = ExitCode.STOPPED


class CostCapReached(LusiferError):
    """The run's recorded spend reached its ``--max-cost``; it is left resumable."""

    exit_code = ExitCode.COST_CAP


class JobsFailed(LusiferError):
    """The run ended and its table was printed, but some of its jobs failed."""

    exit_code = ExitCode.JOBS_FAILED


def raise_if_jobs_failed(engine: Engine, run_id: str) -> None:
    """End a command that finished a run: exit 0 only when every job of the run is done."""
    counts = job_counts(engine, run_id)
    total = sum(sum(states.values()) for states in counts.values())
    failed = sum(states.get(JobState.FAILED, 0) for states in counts.values())
    done = sum(states.get(JobState.DONE, 0) for states in counts.values())
    if failed or done < total:
        raise JobsFailed(
            f"run {run_id} ended with {failed} of {total} jobs failed "
            f"({done} done); `lusifer status {run_id}` shows why"
        )


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


def enqueue_ready(engine: Engine, app: Celery, run_id: str, queue: str) -> int:
    """Queue every ready job of a run that nobody queued yet; return how many."""
    return take_and_send(engine, app, ready_job_ids(engine, run_id), queue, [JobState.PENDING])


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


@dataclass
class _Rounds:
    """One round of following a run: sweep, stop conditions, sending, progress."""

    engine: Engine
    run_id: str
    dispatcher: _Dispatcher
    watch: StallWatch
    progress: Progress
    bars: dict[JobKind, TaskID]
    lease_s: float
    cap_grace_s: float
    last_sweep: float = 0.0
    capped_at: float | None = None

    def one(self) -> bool:
        """Run one round; True when every job of the run has ended."""
        engine, run_id = self.engine, self.run_id
        if time.monotonic() - self.last_sweep > min(60.0, self.lease_s / 4):
            # Jobs orphaned by a dead worker go back to pending and are sent again.
            release_stale(engine, run_id, self.lease_s)
            vacuum_queue_tables(engine)
            self.last_sweep = time.monotonic()
        with Session(engine) as session:
            run = session.get(Run, run_id)
            if run is not None and run.status == RunStatus.FAILED:
                raise RunStopped(f"run {run_id} stopped: {run.error}")
        capped = run is not None and over_budget(run)
        if not capped:
            self.dispatcher.tick()
            self.watch.check()
        counts = job_counts(engine, run_id)
        unfinished = 0
        for kind, bar in self.bars.items():
            states = counts.get(kind, {})
            total = sum(states.values())
            finished = states.get(JobState.DONE, 0) + states.get(JobState.FAILED, 0)
            unfinished += total - finished
            failed = states.get(JobState.FAILED, 0)
            self.progress.update(bar, total=total, completed=finished, failed=failed)
        if unfinished == 0:
            set_run_status(engine, run_id, RunStatus.DONE)
            return True
        if capped:
            self._stop_at_cap(counts, unfinished)
        return False

    def _stop_at_cap(self, counts: dict[str, dict[str, int]], unfinished: int) -> None:
        self.capped_at = self.capped_at or time.monotonic()
        running = sum(c.get(JobState.RUNNING, 0) for c in counts.values())
        queued = sum(c.get(JobState.QUEUED, 0) for c in counts.values())
        # Stop once the calls in flight have landed and the workers have handed back the jobs
        # still queued (or have had time to); the rest waits for a higher cap.
        if running == 0 and (queued == 0 or time.monotonic() - self.capped_at > self.cap_grace_s):
            set_run_status(self.engine, self.run_id, RunStatus.CAPPED)
            raise CostCapReached(_cap_message(self.engine, self.run_id, unfinished))


@dataclass
class _DatabaseOutage:
    """Rides out a database restart or a short outage with a yellow line, as for the broker;
    past the window the command stops (``resume`` goes on)."""

    console: Console
    window_s: float
    down_since: float | None = None

    def ride_out(self, err: Exception) -> float:
        """Note a failed round; the seconds to wait before the next, or re-raise past the window."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            reason = " ".join(str(getattr(err, "orig", None) or err).split())[:200]
            self.console.print(
                f"[yellow]database unreachable ({escape(reason)}); retrying for up to "
                f"{self.window_s:g} s[/]"
            )
        elif now - self.down_since > self.window_s:
            raise err
        return min(5.0, 0.5 + (now - self.down_since) / 4)

    def over(self) -> None:
        """Note a round that reached the database."""
        if self.down_since is not None:
            elapsed = time.monotonic() - self.down_since
            self.console.print(f"[green]database reachable again[/] after {elapsed:.0f} s")
            self.down_since = None


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
    db_outage_s: float = 90.0,
    stall_warn_s: float = 60.0,
    stall_give_up_s: float = 300.0,
) -> None:
    """Enqueue ready jobs and show progress until every job is done or failed, or the run's
    spend reaches its cost cap (``CostCapReached``)."""
    dispatcher = _Dispatcher(engine, app, run_id, queue, console, requeue_grace_s)
    watch = StallWatch(
        engine,
        app,
        run_id,
        queue,
        console,
        warn_after_s=stall_warn_s,
        give_up_after_s=stall_give_up_s,
    )
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
        rounds = _Rounds(engine, run_id, dispatcher, watch, progress, bars, lease_s, cap_grace_s)
        outage = _DatabaseOutage(console, db_outage_s)
        while True:
            try:
                if rounds.one():
                    return
                if health_check is not None:
                    health_check()
            except DATABASE_ERRORS as err:
                time.sleep(outage.ride_out(err))
                continue
            outage.over()
            time.sleep(poll_s)
