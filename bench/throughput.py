"""Figure 2: throughput against the ideal when the LLM is slow (1 s a call by default).

The ideal is what ``in_flight`` perfect slots could do with this plan: every slot busy as long
as some call is ready. A profile job is a chain of calls and its ratings wait for it, so the
ideal makespan comes from list-scheduling the plan's own jobs (profiles first), not from
``calls / (in_flight / latency)`` alone. The steady-state ratio (calls per second while the
queue is full, over ``in_flight / latency``) is reported too: it is the one the tail of the
plan cannot blur.
"""

from __future__ import annotations

import heapq
import secrets
from pathlib import Path
from typing import Any

from bench.cluster import cluster, run_and_time, run_counts, stub_run_config
from bench.report import Table, print_table
from coordinator.plan import Plan
from lusifer.store.job_ids import ProfileInputs
from lusifer.store.tables import JobKind

TARGET_RATIO = 0.90


def ideal_makespan(plan: Plan, slots: int, latency_s: float) -> float:
    """Seconds ``slots`` always-busy slots need for the plan's calls, dependencies kept."""
    chains: dict[str, int] = {}
    followups: dict[str, list[int]] = {}
    for job in plan.jobs():
        if job["kind"] == JobKind.PROFILE:
            chains[job["id"]] = len(ProfileInputs.model_validate_json(job["inputs_json"]).batches)
        else:
            followups.setdefault(job["depends_on"], []).append(1)
    # Events: (time a slot frees up). Ready work: profile chains first (they unlock ratings).
    free = [0.0] * slots
    heapq.heapify(free)
    ready_ratings: list[float] = []  # times at which a rating call becomes ready
    finish = 0.0
    for profile_id, calls in chains.items():
        start = heapq.heappop(free)
        end = start + calls * latency_s
        heapq.heappush(free, end)
        ready_ratings.extend([end] * len(followups.get(profile_id, [])))
        finish = max(finish, end)
    for ready in sorted(ready_ratings):
        start = max(heapq.heappop(free), ready)
        end = start + latency_s
        heapq.heappush(free, end)
        finish = max(finish, end)
    return finish


def steady_calls_per_s(timestamps: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Calls per second between the ``low`` and ``high`` quantiles of the request times."""
    if len(timestamps) < 10:
        return 0.0
    ts = sorted(timestamps)
    a, b = int(low * (len(ts) - 1)), int(high * (len(ts) - 1))
    span = ts[b] - ts[a]
    return (b - a) / span if span > 0 else 0.0


def measure_throughput(
    data_dir: Path,
    *,
    processes: int,
    threads: int,
    latency_s: float = 1.0,
    fold: str = "u1",
    max_users: int | None = 300,
) -> dict[str, Any]:
    """Run a plan against a slow stub with ``processes`` x ``threads`` calls in flight."""
    run_id = f"bench-throughput-{secrets.token_hex(3)}"
    in_flight = processes * threads
    # Threads hold a connection only around their statements: a small pool per process keeps
    # all the processes under PostgreSQL's max_connections (shared with others on the machine).
    pool = max(4, 32 // processes)
    db_env = {"LUSIFER_DB_POOL_SIZE": str(pool), "LUSIFER_DB_MAX_OVERFLOW": str(pool // 2)}
    with cluster(workers=processes, threads=threads, latency_s=latency_s, worker_env=db_env) as c:
        config = stub_run_config(data_dir, (fold,), max_users, c.stub.base_url)
        plan, times = run_and_time(c, config, run_id)
        counts = run_counts(c.engine, run_id)
        stamps = [r["ts"] for r in c.stub.requests() if r["path"].endswith("/chat/completions")]
    calls = counts.call_uses
    ideal_s = ideal_makespan(plan, in_flight, latency_s)
    measured = calls / times.execute_s if times.execute_s else 0.0
    ideal = calls / ideal_s if ideal_s else 0.0
    steady = steady_calls_per_s(stamps)
    return {
        "processes": processes,
        "threads": threads,
        "in_flight": in_flight,
        "latency_s": latency_s,
        "fold": fold,
        "users": sum(plan.users_per_fold.values()),
        "llm_calls": calls,
        "coverage_pct": counts.coverage_pct,
        "execute_s": times.execute_s,
        "ideal_s": ideal_s,
        "calls_per_s": measured,
        "ideal_calls_per_s": ideal,
        "ratio": measured / ideal if ideal else 0.0,
        "steady_calls_per_s": steady,
        "steady_ideal_calls_per_s": in_flight / latency_s,
        "steady_ratio": steady * latency_s / in_flight,
    }


def print_throughput(results: list[dict[str, Any]]) -> None:
    """The figure as a table, one row per worker layout."""
    if not results:
        return
    latency = results[0]["latency_s"]
    table = Table(title=f"2. Throughput against the ideal ({latency:g} s stub latency)")
    for name in ("processes x threads", "in flight", "calls", "wall s", "ideal s"):
        table.add_column(name, justify="right")
    for name in ("calls/s", "ideal calls/s", "ratio", "steady ratio", "coverage"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            f"{r['processes']} x {r['threads']}",
            str(r["in_flight"]),
            str(r["llm_calls"]),
            f"{r['execute_s']:.1f}",
            f"{r['ideal_s']:.1f}",
            f"{r['calls_per_s']:.1f}",
            f"{r['ideal_calls_per_s']:.1f}",
            _ratio(r["ratio"]),
            _ratio(r["steady_ratio"]),
            f"{r['coverage_pct']:.1f} %",
        )
    print_table(table)


def _ratio(value: float) -> str:
    style = "green" if value >= TARGET_RATIO else "red"
    return f"[{style}]{100 * value:.0f} %[/]"
