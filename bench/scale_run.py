"""A stretch of a large run against the instant stub: calls per second over time, the cost of
each coordinator poll, peak memory of the coordinator and workers, database bytes, report time.

A whole million-job run takes hours on a shared 2-core machine, so the coordinator follows
the stored plan for a fixed time and stops; the figure says how far it got.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

from rich.console import Console
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from bench.cluster import Cluster, watchdog
from bench.scale_phases import peak_rss_mb
from coordinator.aggregate import aggregate_run
from coordinator.follow import follow
from lusifer.queue import make_celery
from lusifer.store.run_states import job_counts, ready_job_ids


class _TimeUp(Exception):
    """The stretch of the run the figure follows is over."""


def _timing(call: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            into.append(1000.0 * (time.perf_counter() - started))

    return timed


class _Windows:
    """Every ``window_s``: jobs done (the database's tally), the CPU seconds of each group of
    the cluster's processes, and the machine's load average.

    On a shared machine calls/s follows whatever else runs; CPU ms per job does not, so the
    two side by side say whether the run itself slowed down or the machine got busier.
    """

    def __init__(self, c: Cluster, run_id: str, window_s: float) -> None:
        self._c, self._run_id, self._window_s = c, run_id, window_s
        self._meter = c.cpu_meter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_all, daemon=True)
        self.rows: list[dict[str, Any]] = []

    def _done(self) -> int:
        counts = job_counts(self._c.engine, self._run_id)
        return sum(states.get("done", 0) for states in counts.values())

    def _sample_all(self) -> None:
        last_t, last_done = time.perf_counter(), self._done()
        self._meter.start()
        while not self._stop.wait(self._window_s):
            try:
                now, done = time.perf_counter(), self._done()
            except OperationalError:
                # The shared server dropped the connection (another user's admin command):
                # this window merges into the next one.
                continue
            cpu = self._meter.since_last()
            jobs = done - last_done
            work_cpu = sum(v for k, v in cpu.items() if not k.startswith("Redis"))
            self.rows.append(
                {
                    "t_s": now - self._started,
                    "jobs": jobs,
                    "jobs_per_s": jobs / (now - last_t),
                    "cpu_ms_per_job": 1000.0 * work_cpu / jobs if jobs else None,
                    "cpu_s": cpu,
                    "load1": os.getloadavg()[0],
                }
            )
            last_t, last_done = now, done

    def __enter__(self) -> _Windows:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def first_and_last(rows: list[dict[str, Any]], share: float = 0.1) -> dict[str, Any]:
    """Mean jobs/s and CPU ms per job over the first and the last ``share`` of full windows."""
    full = [r for r in rows if r["jobs"]]
    k = max(1, int(len(full) * share))
    parts = {"first": full[:k], "last": full[-k:]}
    summary: dict[str, Any] = {}
    for name, part in parts.items():
        jobs = sum(r["jobs"] for r in part)
        cpu = sum(sum(v for g, v in r["cpu_s"].items() if not g.startswith("Redis")) for r in part)
        span = sum(r["jobs"] / r["jobs_per_s"] for r in part if r["jobs_per_s"])
        summary[f"{name}_jobs_per_s"] = jobs / span if span else 0.0
        summary[f"{name}_cpu_ms_per_job"] = 1000.0 * cpu / jobs if jobs else None
        summary[f"{name}_load1"] = sum(r["load1"] for r in part) / len(part) if part else None
    return summary


def _windows(engine: Engine, window_s: float) -> list[float]:
    """Calls stored per second in consecutive windows of the stretch (LLMCall.created_at)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT floor(extract(epoch FROM created_at - first.t) / :w) AS bucket, count(*) "
                "FROM llmcall, (SELECT min(created_at) AS t FROM llmcall) AS first "
                "GROUP BY bucket ORDER BY bucket"
            ),
            {"w": window_s},
        ).all()
    return [int(n) / window_s for _, n in rows]


def _table_bytes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        ).all()
    return {name: int(size) for name, size in rows}


def follow_for(
    c: Cluster, run_id: str, folds: tuple[str, ...], seconds: float, window_s: float
) -> dict[str, Any]:
    """Follow the stored run for ``seconds`` with the cluster's workers; the figures."""
    ready_ms: list[float] = []
    counts_ms: list[float] = []
    deadline = time.monotonic() + seconds
    stalled = watchdog(c, run_id)

    def check() -> None:
        stalled()
        if time.monotonic() > deadline:
            raise _TimeUp

    started = time.perf_counter()
    finished = False
    sampler = _Windows(c, run_id, window_s)
    try:
        with (
            sampler,
            patch("coordinator.follow.ready_job_ids", _timing(ready_job_ids, ready_ms)),
            patch("coordinator.follow.job_counts", _timing(job_counts, counts_ms)),
        ):
            follow(
                c.engine,
                make_celery(c.settings),
                run_id,
                c.settings.queue,
                Console(file=io.StringIO()),
                lease_s=c.settings.job_lease_s,
                requeue_grace_s=c.settings.requeue_grace_s,
                health_check=check,
            )
        finished = True
    except _TimeUp:
        pass
    wall_s = time.perf_counter() - started
    worker_peaks = [peak_rss_mb(p.pid) for p in c.workers.processes]
    with c.engine.connect() as conn:
        calls = int(conn.execute(text("SELECT count(*) FROM llmcall")).scalar() or 0)
        rated = int(
            conn.execute(
                text("SELECT count(*) FROM simulatedrating WHERE rating IS NOT NULL")
            ).scalar()
            or 0
        )
        done = int(
            conn.execute(text("SELECT count(*) FROM job WHERE state = 'done'")).scalar() or 0
        )
    started = time.perf_counter()
    aggregate_run(c.engine, run_id, folds)
    report_s = time.perf_counter() - started
    windows = _windows(c.engine, window_s)
    full = windows[1:-1] or windows  # the first and last windows are partial
    polls = [r + n for r, n in zip(ready_ms, counts_ms, strict=False)]
    return {
        "finished": finished,
        "wall_s": wall_s,
        "calls": calls,
        "jobs_done": done,
        "rated": rated,
        "calls_per_s": calls / wall_s if wall_s else 0.0,
        "ms_per_call": 1000.0 * wall_s / calls if calls else 0.0,
        "calls_per_s_windows": windows,
        "calls_per_s_first": full[0] if full else 0.0,
        "calls_per_s_last": full[-1] if full else 0.0,
        "polls": len(polls),
        "poll_ms_max": max(polls, default=0.0),
        "poll_ms_median": sorted(polls)[len(polls) // 2] if polls else 0.0,
        "ready_ms_max": max(ready_ms, default=0.0),
        "counts_ms_max": max(counts_ms, default=0.0),
        "coordinator_peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": worker_peaks,
        "table_bytes": _table_bytes(c.engine),
        "report_s": report_s,
        "windows": sampler.rows,
        "first_and_last": first_and_last(sampler.rows),
    }
