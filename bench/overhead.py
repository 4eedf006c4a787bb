"""Figure 1: orchestration overhead — a whole plan against an instant stub.

With an LLM that answers at once, everything left is queue, database and Python: the wall time
divided by the LLM calls is what the system adds to each call.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, Engines, cluster, run_and_time, run_counts, stub_run_config
from bench.profile import print_profile, profiled, summarise
from bench.report import Table, console, print_table
from lusifer.core.config import MOVIELENS_FOLDS

ALL_FOLDS = MOVIELENS_FOLDS
TARGET_MS_PER_CALL = 3.0
LOCAL_TARGET_RATIO = 1.5


def measure_overhead(
    data_dir: Path,
    *,
    folds: tuple[str, ...] = ALL_FOLDS,
    max_users: int | None = None,
    workers: int = 2,
    threads: int = 8,
    profile_dir: Path | None = None,
    engines: Engines = "cluster",
) -> dict[str, Any]:
    """Run the plan against an instant stub and return the figures.

    With ``profile_dir`` every process is sampled by py-spy and ``profile`` holds CPU samples
    per process and category.
    """
    run_id = f"bench-overhead-{secrets.token_hex(3)}"
    profile: dict[str, dict[str, int]] = {}
    with (
        cluster(workers=workers, threads=threads, latency_s=0.0, engines=engines) as c,
        ExitStack() as stack,
    ):
        config = stub_run_config(data_dir, folds, max_users, c.stub.base_url)
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            outputs = stack.enter_context(profiled(_pids(c), profile_dir))
        meter = c.cpu_meter()
        meter.start()
        plan, times = run_and_time(c, config, run_id)
        meter.stop()
        stack.close()
        if profile_dir is not None:
            profile = {path.stem: dict(summarise([path])) for path in outputs}
        counts = run_counts(c.engine, run_id)
        stub_calls = c.stub.chat_count()
    calls = counts.call_uses
    lost = counts.expected_ratings - counts.rated
    return {
        "engines": engines,
        "folds": list(folds),
        "users": sum(plan.users_per_fold.values()),
        "workers": workers,
        "threads": threads,
        "jobs": counts.jobs,
        "jobs_done": counts.jobs_done,
        "jobs_failed": counts.jobs_failed,
        "expected_ratings": counts.expected_ratings,
        "rated": counts.rated,
        "coverage_pct": counts.coverage_pct,
        "lost_ratings": lost,
        "llm_calls": calls,
        "stub_chat_requests": stub_calls,
        "calls_recorded": counts.calls_recorded,
        "load_s": times.load_s,
        "plan_s": times.plan_s,
        "store_s": times.store_s,
        "execute_s": times.execute_s,
        "wall_s": times.total_s,
        "calls_per_s": calls / times.total_s if times.total_s else 0.0,
        "ms_per_call": 1000.0 * times.total_s / calls if calls else 0.0,
        "execute_ms_per_call": 1000.0 * times.execute_s / calls if calls else 0.0,
        "target_ms_per_call": TARGET_MS_PER_CALL,
        "cache_hits": counts.cache_hits,
        # Every request the stub answered is a recorded call (a user whose profile batches are
        # the same in two folds asks once: the second use is a cache hit).
        "nothing_lost": lost == 0
        and counts.jobs_failed == 0
        and stub_calls == counts.calls_recorded
        and counts.call_uses - counts.cache_hits == counts.calls_recorded,
        "profile": profile,
        "cpu_s": meter.seconds,
        "cpu_ms_per_call": {k: 1000.0 * v / calls for k, v in meter.seconds.items()}
        if calls
        else {},
    }


def _pids(c: Cluster) -> dict[str, int]:
    pids = {f"worker{i}": p.pid for i, p in enumerate(c.workers.processes)}
    return {**pids, "stub": c.stub.process.pid, "coordinator": os.getpid()}


def print_overhead(result: dict[str, Any]) -> None:
    """The figure as a table."""
    table = Table(title=f"1. Orchestration overhead (instant stub), {result['engines']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    ok = result["ms_per_call"] <= TARGET_MS_PER_CALL and result["nothing_lost"]
    rows = [
        ("folds / users", f"{','.join(result['folds'])} / {result['users']}"),
        ("workers x threads", f"{result['workers']} x {result['threads']}"),
        (
            "jobs (done / failed)",
            f"{result['jobs']} ({result['jobs_done']} / {result['jobs_failed']})",
        ),
        (
            "LLM calls: uses / cache hits / recorded / stub requests",
            f"{result['llm_calls']} / {result['cache_hits']} / {result['calls_recorded']} / "
            f"{result['stub_chat_requests']}",
        ),
        ("ratings simulated / expected", f"{result['rated']} / {result['expected_ratings']}"),
        ("coverage", f"{result['coverage_pct']:.2f} %"),
        (
            "load + plan + store",
            f"{result['load_s']:.1f} + {result['plan_s']:.1f} + {result['store_s']:.1f} s",
        ),
        ("execute", f"{result['execute_s']:.1f} s"),
        ("wall time", f"{result['wall_s']:.1f} s"),
        ("LLM calls per second", f"{result['calls_per_s']:.0f}"),
        ("queue + database ms per call", f"{result['ms_per_call']:.2f} ms"),
        ("  of which executing", f"{result['execute_ms_per_call']:.2f} ms"),
        ("target", f"≤ {TARGET_MS_PER_CALL:.0f} ms, nothing lost: {'met' if ok else 'NOT met'}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)
    cpu = Table(title="CPU per LLM call, by process (less noisy than wall time on a busy machine)")
    cpu.add_column("process")
    cpu.add_column("CPU s", justify="right")
    cpu.add_column("CPU ms per call", justify="right")
    for name, seconds in result["cpu_s"].items():
        cpu.add_row(name, f"{seconds:.1f}", f"{result['cpu_ms_per_call'][name]:.2f}")
    own = {k: v for k, v in result["cpu_ms_per_call"].items() if k != "Redis (shared)"}
    cpu.add_row(
        "all but Redis",
        f"{sum(v for k, v in result['cpu_s'].items() if k in own):.1f}",
        f"{sum(own.values()):.2f}",
    )
    print_table(cpu)
    if result["profile"]:
        for process, counts in result["profile"].items():
            print_profile(Counter(counts), f"CPU samples of {process} (py-spy --gil)")


LOCAL_ENGINES: tuple[Engines, ...] = ("cluster", "embedded", "sqlite")


def measure_local_against_cluster(
    data_dir: Path, *, folds: tuple[str, ...], max_users: int | None, workers: int, threads: int
) -> dict[str, Any]:
    """The same plan on the machine's services, local mode's embedded PostgreSQL, and the
    SQLite file of earlier versions' local mode."""
    figures = {
        engines: measure_overhead(
            data_dir,
            folds=folds,
            max_users=max_users,
            workers=workers,
            threads=threads,
            engines=engines,
        )
        for engines in LOCAL_ENGINES
    }
    base = figures["cluster"]["ms_per_call"]
    ratios = {k: (v["ms_per_call"] / base if base else 0.0) for k, v in figures.items()}
    return {"figures": figures, "ratio_to_cluster": ratios}


def print_local_against_cluster(result: dict[str, Any]) -> None:
    """The figures side by side, and the ratio the target asks about."""
    figures: dict[str, dict[str, Any]] = result["figures"]
    table = Table(title="Local mode's engines against the cluster's, same plan, same workers")
    table.add_column("measure")
    for name in figures:
        table.add_column(name, justify="right")

    def row(label: str, cell: Any) -> None:
        table.add_row(label, *(cell(f) for f in figures.values()))

    row("LLM calls", lambda f: f"{f['llm_calls']}")
    row("nothing lost", lambda f: str(f["nothing_lost"]))
    row("execute", lambda f: f"{f['execute_s']:.1f} s")
    row("calls per second", lambda f: f"{f['calls_per_s']:.0f}")
    row("queue + database ms per call", lambda f: f"{f['ms_per_call']:.2f}")
    for name in ("workers", "PostgreSQL", "coordinator"):
        row(f"CPU ms per call, {name}", lambda f, n=name: f"{f['cpu_ms_per_call'].get(n, 0.0):.2f}")
    ratios = result["ratio_to_cluster"]
    table.add_row("÷ cluster", *(f"{ratios[k]:.2f}x" for k in figures))
    print_table(table)
    met = "met" if ratios["embedded"] <= LOCAL_TARGET_RATIO else "NOT met"
    console.print(f"target: embedded within {LOCAL_TARGET_RATIO}x of cluster: {met}")
