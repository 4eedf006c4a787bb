"""The phases of the scale figure that need no worker: plan, enqueue, lost-message check, and
the cost of a coordinator poll as a run's jobs get done."""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Engine, text

from bench.synthetic import SyntheticFiles
from coordinator.dispatch import waiting_job_ids
from coordinator.follow import enqueue_ready
from coordinator.plan import describe_plan, plan_run, store_plan
from lusifer.core.config import parse_run_config
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import get_engine
from lusifer.store.run_states import job_counts, ready_job_ids, set_run_status

_PAGE = 4096


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now, in MB."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 1e6


def peak_rss_mb(pid: int | str = "self") -> float:
    """The most resident memory a process has had, in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    return 0.0


class PhasePeaks:
    """Samples this process's RSS every 20 ms and keeps the peak of each named phase."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            now = rss_mb()
            self.peaks[self._phase] = max(self.peaks.get(self._phase, 0.0), now)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the samples taken inside to ``name``."""
        self._phase = name
        self.peaks[name] = rss_mb()
        yield
        self.peaks[name] = max(self.peaks[name], rss_mb())

    def __enter__(self) -> PhasePeaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def run_config(files: SyntheticFiles, base_url: str, **options: Any) -> dict[str, Any]:
    """The run configuration of a synthetic dataset (as `--ratings-csv ...` would make it)."""
    return {
        "dataset": {
            "kind": "csv",
            "ratings_csv": files.ratings,
            "items_csv": files.items,
            "users_csv": files.users,
            "columns": {"age": "age", "gender": "gender", "occupation": "occupation"},
            "n_folds": 5,
        },
        "llm": {"base_url": base_url, "model": "stub-model"},
        **options,
    }


def _plan_and_store(config_data: dict[str, Any], database_url: str, run_id: str) -> dict[str, Any]:
    # Runs in a child process, so its peak memory is the coordinator's planning alone.
    from coordinator.datasets import load_dataset

    config = parse_run_config(config_data)
    figures: dict[str, Any] = {"rss_start_mb": rss_mb()}
    with PhasePeaks() as peaks:
        with _timed_phase(figures, peaks, "load"):
            dataset = load_dataset(config)
        figures["rss_after_load_mb"] = rss_mb()
        with _timed_phase(figures, peaks, "plan"):
            plan = plan_run(run_id, config, dataset, load_prompt_set(config.prompt_set))
        figures["rss_after_plan_mb"] = rss_mb()
        engine = get_engine(database_url)
        with _timed_phase(figures, peaks, "store"):
            store_plan(engine, plan, dataset)
        set_run_status(engine, run_id, "running")
    figures["peak_mb_by_phase"] = peaks.peaks
    # ru_maxrss is in KiB; the sampled peaks are in MB (10^6 bytes).
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    figures["plan"] = describe_plan(plan)
    figures["jobs"] = plan.job_count
    figures["expected_ratings"] = plan.expected_ratings
    figures["users"] = sum(plan.users_per_fold.values())
    return figures


@contextmanager
def _timed_phase(figures: dict[str, Any], peaks: PhasePeaks, name: str) -> Iterator[None]:
    # CPU seconds beside wall seconds: on a shared machine the process's own CPU is steadier.
    started, cpu = time.perf_counter(), time.process_time()
    with peaks.phase(name):
        yield
    figures[f"{name}_s"] = time.perf_counter() - started
    figures[f"{name}_cpu_s"] = time.process_time() - cpu


def plan_in_child(config_data: dict[str, Any], database_url: str, run_id: str) -> dict[str, Any]:
    """Load, plan and store in a fresh process; its times and memory."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        figures: dict[str, Any] = pool.apply(_plan_and_store, (config_data, database_url, run_id))
    return figures


def measure_enqueue(engine: Engine, app: Celery, run_id: str, queue: str) -> dict[str, Any]:
    """Send every ready job (a run's first enqueue), then scan the queue as the lost-message
    check does; the queue is emptied afterwards."""
    # CPU time too: on a shared machine the coordinator's own seconds are the steadier figure.
    started, cpu = time.perf_counter(), time.process_time()
    sent = enqueue_ready(engine, app, run_id, queue)
    enqueue_s, enqueue_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    held = waiting_job_ids(app, queue)
    scan_s, scan_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(queue)
    return {
        "sent": sent,
        "enqueue_s": enqueue_s,
        "enqueue_us_per_job": 1e6 * enqueue_s / sent if sent else 0.0,
        "enqueue_cpu_us_per_job": 1e6 * enqueue_cpu_s / sent if sent else 0.0,
        "held_in_broker": len(held or ()),
        "lost_scan_s": scan_s,
        "lost_scan_us_per_message": 1e6 * scan_s / sent if sent else 0.0,
        "lost_scan_cpu_us_per_message": 1e6 * scan_cpu_s / sent if sent else 0.0,
    }


# The coordinator's poll before this change, kept to measure against.
_OLD_READY = text(
    "SELECT id FROM job WHERE run_id = :run_id AND state = 'pending' AND (depends_on IS NULL "
    "OR depends_on IN (SELECT id FROM job WHERE run_id = :run_id AND state = 'done')) "
    "ORDER BY kind, id"
)
_OLD_COUNTS = text(
    "SELECT kind, state, count(*) FROM job WHERE run_id = :run_id GROUP BY kind, state"
)


def _timed(call: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def _old_poll_ms(engine: Engine, run_id: str, timeout_s: float) -> float | None:
    """The old poll's milliseconds; None when it ran past ``timeout_s``."""
    with engine.connect() as conn:
        conn.execute(text(f"SET statement_timeout = {int(timeout_s * 1000)}"))
        started = time.perf_counter()
        try:
            conn.execute(_OLD_READY, {"run_id": run_id}).all()
            conn.execute(_OLD_COUNTS, {"run_id": run_id}).all()
        except Exception:  # the timeout: the figure says "more than"
            conn.rollback()
            return None
        finally:
            conn.execute(text("SET statement_timeout = 0"))
        return 1000.0 * (time.perf_counter() - started)


def measure_polls(
    engine: Engine, run_id: str, steps: int, *, old_timeout_s: float
) -> list[dict[str, Any]]:
    """Finish the run's users step by step (profile, then its ratings, as workers would) and
    time one coordinator poll, new and old, after each step."""
    with engine.connect() as conn:
        top = int(
            conn.execute(
                text("SELECT max(user_id) FROM job WHERE run_id = :r"), {"r": run_id}
            ).scalar()
            or 0
        )
    points = []
    for step in range(steps + 1):
        if step:
            low, high = (step - 1) * top // steps + 1, step * top // steps
            # As a worker does: the ratings are taken (running) when their profile ends, so
            # they are never pending and ready on the way; then they end too.
            bounds = {"r": run_id, "low": low, "high": high}
            with engine.begin() as conn:
                for kind, state in (("rating", "running"), ("profile", "done"), ("rating", "done")):
                    conn.execute(
                        text(
                            "UPDATE job SET state = :s WHERE run_id = :r AND kind = :k "
                            "AND user_id BETWEEN :low AND :high"
                        ),
                        {**bounds, "k": kind, "s": state},
                    )
        with engine.connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM job WHERE run_id = :r AND state = 'done'"),
                {"r": run_id},
            ).scalar()
        points.append(
            {
                "done_jobs": int(done or 0),
                "ready_ms": _timed(lambda: ready_job_ids(engine, run_id)),
                "counts_ms": _timed(lambda: job_counts(engine, run_id)),
                "old_poll_ms": _old_poll_ms(engine, run_id, old_timeout_s),
            }
        )
        print(f"poll at {points[-1]}", flush=True)  # a long figure shows its points as it goes
    return points


def measure_enqueue_alone(jobs: int) -> dict[str, Any]:
    """The first enqueue of ``jobs`` ready jobs (rows made in the database, no data file):
    the figure for a large run's profile jobs without loading and planning its data."""
    import secrets

    from lusifer.core.settings import Settings
    from lusifer.queue import make_celery
    from lusifer.store.engines import create_tables
    from tests.integration.services import REDIS_DB, postgres_schema

    run_id = f"bench-enqueue-{secrets.token_hex(3)}"
    with postgres_schema("lusifer_bench") as url:
        engine = get_engine(url)
        create_tables(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, waiting, "
                    "inputs_json, attempts, reasks, updated_at) SELECT :r || '/f1/' || g || "
                    "'/profile', :r, 'f1', g, 'profile', 0, 'pending', false, '{}', 0, 0, now() "
                    "FROM generate_series(1, :n) AS g"
                ),
                {"r": run_id, "n": jobs},
            )
            conn.execute(text("ANALYZE job"))
        queue = f"bench-idle-{secrets.token_hex(4)}"
        settings = Settings(
            broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}", queue=queue, task_events=False
        )
        try:
            return measure_enqueue(engine, make_celery(settings), run_id, queue)
        finally:
            engine.dispose()


def measure_polls_alone(
    users: int, ratings_per_user: int, steps: int, old_timeout_s: float
) -> dict[str, Any]:
    """The poll's cost along a run shaped like ML-1M with the paper prompt set (a profile and
    ``ratings_per_user`` one-item rating jobs per user and fold), its rows made in the database
    with no data to load: profiles queued as after the first enqueue, ratings waiting."""
    import secrets

    from lusifer.store.engines import create_tables
    from tests.integration.services import postgres_schema

    run_id = f"bench-polls-{secrets.token_hex(3)}"
    with postgres_schema("lusifer_bench") as url:
        engine = get_engine(url)
        create_tables(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, waiting, "
                    "inputs_json, attempts, reasks, updated_at) SELECT :r || '/f' || f || '/' || "
                    "u || '/profile', :r, 'f' || f, u, 'profile', 0, 'queued', false, '{}', 0, 0, "
                    "now() FROM generate_series(1, :users) AS u, generate_series(1, 5) AS f"
                ),
                {"r": run_id, "users": users},
            )
            conn.execute(
                text(
                    "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, depends_on, "
                    "waiting, inputs_json, attempts, reasks, updated_at) SELECT :r || '/f' || f "
                    "|| '/' || u || '/rating/' || c, :r, 'f' || f, u, 'rating', c, 'pending', "
                    ":r || '/f' || f || '/' || u || '/profile', true, '{}', 0, 0, now() "
                    "FROM generate_series(1, :users) AS u, generate_series(1, 5) AS f, "
                    "generate_series(0, :per - 1) AS c"
                ),
                {"r": run_id, "users": users, "per": ratings_per_user},
            )
            conn.execute(text("ANALYZE job"))
        made_s = time.perf_counter() - started
        try:
            points = measure_polls(engine, run_id, steps, old_timeout_s=old_timeout_s)
        finally:
            engine.dispose()
    return {
        "users": users,
        "jobs": users * 5 * (1 + ratings_per_user),
        "made_s": made_s,
        "polls": points,
    }
