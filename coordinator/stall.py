"""A run whose jobs cannot move says so, instead of waiting silently.

The coordinator notes when the run last moved: a job finished, or a running job's heartbeat
advanced (a long local-model call still counts as moving). When nothing has moved for
``warn_after_s`` it asks the broker which workers consume the run's queue and prints one
line saying why the run waits; with no worker at all for ``give_up_after_s`` it stops with
``RunStalled`` (exit 6), the run left resumable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import Celery
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from coordinator.dispatch import BROKER_ERRORS
from lusifer.core.errors import ExitCode, LusiferError
from lusifer.queue import REFUSED
from lusifer.store.run_states import job_counts
from lusifer.store.tables import Job, JobState


class RunStalled(LusiferError):
    """No job of the run could move: no worker consumes its queue."""

    exit_code = ExitCode.STALLED


def queue_consumers(app: Celery, queue: str, timeout_s: float = 1.0) -> list[str] | None:
    """The workers that consume ``queue``; None when the broker cannot be asked."""
    try:
        replies: Any = app.control.inspect(timeout=timeout_s).active_queues() or {}
    except BROKER_ERRORS:
        return None
    return sorted(
        worker
        for worker, queues in replies.items()
        if any(q.get("name") == queue for q in queues or [])
    )


def _moved_at(engine: Engine, run_id: str) -> tuple[int, datetime | None]:
    """How many jobs of the run ended, and the latest heartbeat of a running one."""
    # From the tally: counting the ended jobs themselves grew with the run (1 M rows at the end).
    counts = job_counts(engine, run_id)
    ended = sum(s.get(JobState.DONE, 0) + s.get(JobState.FAILED, 0) for s in counts.values())
    with Session(engine) as session:
        beat = session.exec(
            select(func.max(Job.updated_at)).where(
                Job.run_id == run_id, Job.state == JobState.RUNNING
            )
        ).one()
    return ended, beat


def _latest_error(engine: Engine, run_id: str) -> str | None:
    with Session(engine) as session:
        return session.exec(
            select(Job.error)
            .where(Job.run_id == run_id, col(Job.error).is_not(None))
            .order_by(col(Job.updated_at).desc())
            .limit(1)
        ).first()


@dataclass
class StallWatch:
    """Watches one run's movement; ``check`` is cheap enough to call every poll."""

    engine: Engine
    app: Celery
    run_id: str
    queue: str
    console: Console
    warn_after_s: float = 60.0
    give_up_after_s: float = 300.0
    check_every_s: float = 10.0
    _last: tuple[int, datetime | None] | None = None
    _moved: float = field(default_factory=time.monotonic)
    _checked: float = 0.0
    _warned: bool = False

    def check(self) -> None:
        """Note whether the run moved; warn once when it stopped, give up without workers."""
        now = time.monotonic()
        if now - self._checked < min(self.check_every_s, self.warn_after_s / 2):
            return
        self._checked = now
        state = _moved_at(self.engine, self.run_id)
        if state != self._last:
            self._last, self._moved = state, now
            if self._warned:
                self.console.print("[green]the run moves again[/]")
                self._warned = False
            return
        idle = now - self._moved
        if idle < self.warn_after_s:
            return
        workers = queue_consumers(self.app, self.queue)
        if workers == [] and idle >= self.give_up_after_s:
            raise RunStalled(
                f"run {self.run_id} stopped: no worker consumed queue {self.queue!r} for "
                f"{idle:.0f} s; start workers, then `lusifer resume {self.run_id}`"
            )
        error = _latest_error(self.engine, self.run_id)
        if error is not None and error.startswith(REFUSED) and idle >= self.give_up_after_s:
            raise RunStalled(f"run {self.run_id} stopped: its jobs were {error}")
        if self._warned:
            return
        self._warned = True
        if workers == []:
            why = (
                f"no worker consumes queue {self.queue!r}: start workers (`lusifer worker`, or "
                "`docker compose up --scale worker=N`) with the same LUSIFER_QUEUE"
            )
        else:
            who = (
                "the broker did not say which workers listen"
                if workers is None
                else (f"{len(workers)} workers consume queue {self.queue!r}")
            )
            why = f"{who}; latest job error: {error or 'none'}"
        self.console.print(f"[yellow]no job moved for {idle:.0f} s: {escape(why)}[/]")
