"""What one scrape of `lusifer metrics` costs as a run grows (not part of the test suite).

    PYTHONPATH=. python bench/metrics_scrape.py [--jobs 10000,100000] [--repeat 5]

For each size it fills a fresh PostgreSQL schema (database `test` on 127.0.0.1:5432) with one
open run shaped like MovieLens 100K's (per job: 2 call uses, 11 test ratings; a quarter of the
jobs profiles), then times the collector's read of it (the five grouped queries in one
transaction) and of an ended run of the same size after its first read (kept in memory).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from coordinator.metrics.collector import LusiferCollector
from lusifer.store.engines import create_tables

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

FILL = [
    "INSERT INTO run (id, created_at, config_json, prompt_set, prompt_version, prompt_hash, "
    "prompts_json, dataset_fingerprint, status, spent_usd) VALUES "
    "(:run, now(), '{}', 'lusifer', '2', 'h', '{}', 'f', :status, 0)",
    "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, inputs_json, attempts, "
    "reasks, updated_at) SELECT :run || '/' || g, :run, 'u' || (g % 5 + 1), g, "
    "CASE WHEN g % 4 = 0 THEN 'profile' ELSE 'rating' END, 0, "
    "(ARRAY['done','done','done','running','queued','pending'])[g % 6 + 1], '{}', 1, g % 3, "
    "now() FROM generate_series(1, :jobs) g",
    "INSERT INTO llmcall (key, model, request_json, response_text, prompt_tokens, "
    "completion_tokens, cached_tokens, latency_s, cost_usd, created_at) "
    "SELECT :run || '/k' || g, 'm', '{}', '{}', 900, 60, 0, (g % 50) / 10.0, 0.0001, now() "
    "FROM generate_series(1, 2 * :jobs) g",
    "INSERT INTO calluse (run_id, job_id, call_key, fold, cached, retries) "
    "SELECT :run, :run || '/' || (g / 2 + 1), :run || '/k' || g, 'u' || (g % 5 + 1), "
    "g % 10 = 0, (g % 7 = 0)::int FROM generate_series(1, 2 * :jobs) g",
    "INSERT INTO simulatedrating (run_id, fold, user_id, item_id, true_rating, rating, job_id) "
    "SELECT :run, 'u' || (g % 5 + 1), g / 11, g, 3, CASE WHEN g % 3 = 0 THEN NULL ELSE 4 END, "
    ":run || '/' || (g / 11 + 1) FROM generate_series(1, 11 * :jobs) g",
]


def typed(statement: str) -> str:
    """The statement with the run id typed: psycopg cannot infer one parameter used twice."""
    return statement.replace(":run", "CAST(:run AS varchar)")


def measure(jobs: int, repeat: int) -> tuple[float, float, float]:
    """Seconds to fill, median ms of an open run's read, median ms of an ended run's."""
    schema = f"lusifer_bench_metrics_{jobs}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        create_tables(engine)
        start = time.perf_counter()
        with engine.begin() as conn:
            for run, status in (("open", "running"), ("ended", "done")):
                for statement in FILL:
                    conn.execute(
                        text(typed(statement)), {"run": run, "status": status, "jobs": jobs}
                    )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        filled = time.perf_counter() - start
        collector = LusiferCollector(
            engine, None, window=timedelta(hours=1), max_runs=10, timeout_s=60.0, min_interval_s=0
        )
        reads = []
        for _ in range(repeat + 1):  # the first read also reads the ended run
            begin = time.perf_counter()
            snapshot = collector.snapshot()
            reads.append(time.perf_counter() - begin)
            assert snapshot.runs is not None and not snapshot.errors, snapshot.errors
        first, later = reads[0], reads[1:]
        # The first read holds both runs; later ones the open run only.
        return filled, statistics.median(later) * 1000, (first - statistics.median(later)) * 1000
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    """Print one line per size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", default="10000,100000", help="comma-separated run sizes")
    parser.add_argument("--repeat", type=int, default=5, help="timed reads per size")
    args = parser.parse_args()
    print(f"{'jobs':>9} {'call uses':>10} {'ratings':>10} {'fill s':>7} {'open run ms':>12} "
          f"{'ended run, first read ms':>25}")  # fmt: skip
    for jobs in (int(part) for part in args.jobs.split(",")):
        filled, open_ms, ended_ms = measure(jobs, args.repeat)
        print(f"{jobs:>9,} {2 * jobs:>10,} {11 * jobs:>10,} {filled:>7.1f} {open_ms:>12.0f} "
              f"{ended_ms:>25.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
