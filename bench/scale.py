"""Figure 5: a million jobs without a stall, on seeded synthetic data shaped like MovieLens-1M.

For one shape it plans and stores a run (in a child process, so its memory is the
coordinator's planning alone), sends the first jobs to a queue no worker reads and scans that
queue as the lost-message check does, follows the run for a while with real workers against
the instant stub, and then finishes the run's users step by step in the database to time one
coordinator poll, new and old, at every share of done jobs.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import text

from bench.cluster import cluster
from bench.report import Table, print_table
from bench.scale_phases import measure_enqueue, measure_polls, plan_in_child, run_config
from bench.scale_run import follow_for
from bench.synthetic import SHAPES, SyntheticFiles, cache_dir, generate
from lusifer.queue import make_celery

TARGET_POLL_MS = 50.0
TARGET_ENQUEUE_S_PER_300K = 30.0
TARGET_PLAN_MB = 1500.0


def measure_scale(
    shape_name: str,
    *,
    seed: int = 0,
    prompt_set: str = "lusifer",
    max_users: int | None = None,
    run_s: float = 120.0,
    poll_steps: int = 10,
    old_timeout_s: float = 30.0,
    workers: int = 2,
    threads: int = 64,
    plan_only: bool = False,
) -> dict[str, Any]:
    """Every figure of one shape (see the module docstring); ``plan_only``: load, plan and
    store alone, with no worker, stub or broker."""
    shape = SHAPES[shape_name]
    started = time.perf_counter()
    files = generate(shape, seed, cache_dir())
    figure: dict[str, Any] = {
        "shape": shape.__dict__,
        "seed": seed,
        "prompt_set": prompt_set,
        "max_users": max_users,
        "generate_s": time.perf_counter() - started,
    }
    run_id = f"bench-scale-{secrets.token_hex(3)}"
    options: dict[str, Any] = {"prompt_set": prompt_set, "folds": ("f1", "f2", "f3", "f4", "f5")}
    if max_users is not None:
        options["max_users"] = max_users
    if plan_only:
        figure["plan"] = _plan_alone(files, run_id, options)
        return figure
    with cluster(workers=workers, threads=threads, latency_s=0.0) as c:
        data = run_config(files, c.stub.base_url, **options)
        figure["plan"] = plan_in_child(data, c.settings.database_url or "", run_id)
        app = make_celery(c.settings)
        # A queue no worker reads: the first enqueue and the broker scan, timed alone.
        figure["enqueue"] = measure_enqueue(c.engine, app, run_id, f"{c.settings.queue}-idle")
        with c.engine.begin() as conn:
            conn.execute(
                text("UPDATE job SET state = 'pending' WHERE run_id = :r AND state = 'queued'"),
                {"r": run_id},
            )
        if run_s > 0:
            figure["run"] = follow_for(c, run_id, options["folds"], run_s, window_s=15.0)
            # The steps below change jobs in bulk: no worker may hold (and lock) any of them.
            for process in c.workers.processes:
                process.terminate()
                process.wait(120)
            with app.connection_for_write() as conn:
                conn.default_channel.client.delete(c.settings.queue)
        figure["polls"] = measure_polls(c.engine, run_id, poll_steps, old_timeout_s=old_timeout_s)
    return figure


def _plan_alone(files: SyntheticFiles, run_id: str, options: dict[str, Any]) -> dict[str, Any]:
    from lusifer.store.engines import create_tables, get_engine
    from tests.integration.services import postgres_schema

    with postgres_schema("lusifer_bench") as url:
        engine = get_engine(url)
        create_tables(engine)
        engine.dispose()
        # Planning calls no LLM: the URL is only part of the stored configuration.
        data = run_config(files, "http://127.0.0.1:9/v1", **options)
        figures: dict[str, Any] = plan_in_child(data, url, run_id)
    return figures


def _fmt_ms(value: float | None, timeout_s: float) -> str:
    return f"> {timeout_s * 1000:.0f}" if value is None else f"{value:.1f}"


def print_scale(figure: dict[str, Any], old_timeout_s: float) -> None:
    """The figure as tables."""
    plan = figure["plan"]
    shape = figure["shape"]
    table = Table(title=f"5. Scale: {shape['name']} ({figure['prompt_set']} prompt set)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    peaks = plan["peak_mb_by_phase"]
    rows = [
        ("plan", plan["plan"]),
        (
            "load / plan / store wall (CPU)",
            " / ".join(
                f"{plan[f'{p}_s']:.1f} ({plan.get(f'{p}_cpu_s', float('nan')):.1f})"
                for p in ("load", "plan", "store")
            )
            + " s",
        ),
        (
            "coordinator RSS: after load / after plan / peak",
            f"{plan['rss_after_load_mb']:.0f} / {plan['rss_after_plan_mb']:.0f} / "
            f"{plan['peak_rss_mb']:.0f} MB (target < {TARGET_PLAN_MB:.0f})",
        ),
        ("peak RSS by phase", ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())),
    ]
    enqueue = figure.get("enqueue")
    if enqueue:
        rows += _enqueue_rows(enqueue)
    run = figure.get("run")
    if run:
        rows += _run_rows(run)
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)
    if "polls" in figure:
        print_scale_polls(figure["polls"], old_timeout_s)


def _enqueue_rows(enqueue: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "first enqueue",
            f"{enqueue['sent']} jobs in {enqueue['enqueue_s']:.1f} s "
            f"({enqueue['enqueue_us_per_job']:.0f} µs each; target 300k < "
            f"{TARGET_ENQUEUE_S_PER_300K:.0f} s)",
        ),
        (
            "lost-message scan",
            f"{enqueue['held_in_broker']} messages in {enqueue['lost_scan_s']:.2f} s "
            f"({enqueue['lost_scan_us_per_message']:.1f} µs each)",
        ),
    ]


def _run_rows(run: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "run stretch",
            f"{run['wall_s']:.0f} s, {run['calls']} calls, {run['jobs_done']} jobs done, "
            f"{run['rated']} ratings{' (finished)' if run['finished'] else ''}",
        ),
        ("calls/s, ms per call", f"{run['calls_per_s']:.0f}, {run['ms_per_call']:.2f} ms"),
        (
            "calls/s first / last full window",
            f"{run['calls_per_s_first']:.0f} / {run['calls_per_s_last']:.0f}",
        ),
        _first_and_last_row(run["first_and_last"]),
        ("database bytes per 100k ratings", _bytes_per_100k(run)),
        (
            "poll (ready + counts) median / max",
            f"{run['poll_ms_median']:.1f} / {run['poll_ms_max']:.1f} ms over {run['polls']}",
        ),
        (
            "peak RSS coordinator / workers",
            f"{run['coordinator_peak_rss_mb']:.0f} / "
            + ", ".join(f"{w:.0f}" for w in run["worker_peak_rss_mb"])
            + " MB",
        ),
        ("report (aggregate) time", f"{run['report_s']:.1f} s"),
    ]


def _first_and_last_row(summary: dict[str, Any]) -> tuple[str, str]:
    def part(name: str) -> str:
        cpu = summary.get(f"{name}_cpu_ms_per_job")
        load = summary.get(f"{name}_load1")
        return (
            f"{summary.get(f'{name}_jobs_per_s', 0.0):.0f} jobs/s, "
            f"{'–' if cpu is None else f'{cpu:.2f}'} CPU ms/job, "
            f"load {'–' if load is None else f'{load:.1f}'}"
        )

    return ("first / last 10 % of windows", f"{part('first')} / {part('last')}")


def _bytes_per_100k(run: dict[str, Any]) -> str:
    rated = run["rated"]
    if not rated:
        return "–"
    sizes = run["table_bytes"]
    total = sum(sizes.values()) * 100_000 / rated / 1e6
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    parts = ", ".join(f"{name} {size * 100_000 / rated / 1e6:.0f}" for name, size in top)
    return f"{total:.0f} MB ({parts})"


def print_scale_polls(points: list[dict[str, Any]], old_timeout_s: float) -> None:
    """The poll's cost at each share of done jobs."""
    polls = Table(title="Cost of one coordinator poll as jobs get done (ms, median of 3)")
    for column in ("done jobs", "ready", "counts", "new total", "old total"):
        polls.add_column(column, justify="right")
    for point in points:
        polls.add_row(
            str(point["done_jobs"]),
            f"{point['ready_ms']:.1f}",
            f"{point['counts_ms']:.1f}",
            f"{point['ready_ms'] + point['counts_ms']:.1f}",
            _fmt_ms(point["old_poll_ms"], old_timeout_s),
        )
    print_table(polls)
