"""A stretch of a large run against the instant stub: calls per second over time, the cost of
each coordinator poll, peak memory of the coordinator and workers, database bytes, report time.

A whole million-job run takes hours on a shared 2-core machine, so the coordinator follows
the stored plan for a fixed time and stops; the figure says how far it got.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

from rich.console import Console
from sqlalchemy import Engine, text

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
    try:
        with (
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
    }
