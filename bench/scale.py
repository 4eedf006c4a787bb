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
from bench.synthetic import SHAPES, cache_dir, generate
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
) -> dict[str, Any]:
    """Every figure of one shape (see the module docstring)."""
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
    with cluster(workers=workers, threads=threads, latency_s=0.0) as c:
        options: dict[str, Any] = {
            "prompt_set": prompt_set,
            "folds": ("f1", "f2", "f3", "f4", "f5"),
        }
        if max_users is not None:
            options["max_users"] = max_users
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


def _fmt_ms(value: float | None, timeout_s: float) -> str:
    return f"> {timeout_s * 1000:.0f}" if value is None else f"{value:.1f}"


def print_scale(figure: dict[str, Any], old_timeout_s: float) -> None:
    """The figure as tables."""
    plan, enqueue = figure["plan"], figure["enqueue"]
    shape = figure["shape"]
    table = Table(title=f"5. Scale: {shape['name']} ({figure['prompt_set']} prompt set)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    peaks = plan["peak_mb_by_phase"]
    rows = [
        ("plan", plan["plan"]),
        (
            "load / plan / store",
            f"{plan['load_s']:.1f} / {plan['plan_s']:.1f} / {plan['store_s']:.1f} s",
        ),
        (
            "coordinator RSS: after load / after plan / peak",
            f"{plan['rss_after_load_mb']:.0f} / {plan['rss_after_plan_mb']:.0f} / "
            f"{plan['peak_rss_mb']:.0f} MB (target < {TARGET_PLAN_MB:.0f})",
        ),
        ("peak RSS by phase", ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())),
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
    run = figure.get("run")
    if run:
        rows += [
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
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)
    print_scale_polls(figure["polls"], old_timeout_s)


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
