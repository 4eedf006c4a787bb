"""A worker never piles up the rating jobs its finished profiles take along.

Profile calls get a worker's slots first, so the rating chunks a finished profile claims for
its own worker could wait there without end: 20 minutes into a million-job run two workers
held 217k jobs marked running (1.6 GB each). Past ``LUSIFER_WORKER_MAX_HELD`` a profile
finishes alone and its ratings go through the queue.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from lusifer.store.engines import get_engine
from tests.integration.services import (
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration

MAX_HELD, THREADS = 8, 4


class RunningPeak:
    """The most jobs of a run marked running at once, sampled every 20 ms."""

    def __init__(self, database_url: str, run_id: str) -> None:
        self._engine = get_engine(database_url)
        self._run_id = run_id
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        query = text("SELECT count(*) FROM job WHERE run_id = :r AND state = 'running'")
        with self._engine.connect() as conn:
            while not self._stop.wait(0.02):
                try:
                    running = int(conn.execute(query, {"r": self._run_id}).scalar_one())
                except ProgrammingError:  # the run has not made its tables yet
                    conn.rollback()
                    continue
                conn.rollback()
                self.samples += 1
                self.peak = max(self.peak, running)

    def __enter__(self) -> RunningPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_worker_holds_a_bounded_number_of_rating_jobs(data_dir: Path, tmp_path: Path) -> None:
    run_id = f"held-{secrets.token_hex(3)}"
    with postgres_schema() as database_url:
        env = service_env(
            database_url,
            f"held-{secrets.token_hex(4)}",
            None,
            LUSIFER_WORKER_MAX_HELD=str(MAX_HELD),
        )
        args = ["run", "--base-url", "", "--model", "stub-model", "--folds", "u1"]
        # The paper's prompts rate one item per call: about 40 rating jobs per user.
        args += ["--prompt-set", "paper", "--max-users", "30", "--data-dir", str(data_dir)]
        args += ["--run-id", run_id]
        with stub_server() as stub, celery_workers(env, tmp_path, count=1, threads=THREADS):
            args[2] = stub.base_url
            with RunningPeak(database_url, run_id) as running:
                result = run_cli(args, env, tmp_path)
        assert result.returncode == 0, result.stderr + result.stdout
        with get_engine(database_url).connect() as conn:
            states: dict[str, int] = dict(
                conn.execute(
                    text("SELECT state, count(*) FROM job WHERE run_id = :r GROUP BY state"),
                    {"r": run_id},
                ).all()
            )
            largest_user = conn.execute(
                text(
                    "SELECT max(n) FROM (SELECT count(*) AS n FROM job WHERE run_id = :r "
                    "AND kind = 'rating' GROUP BY user_id) AS per_user"
                ),
                {"r": run_id},
            ).scalar_one()
    assert set(states) == {"done"} and states["done"] > 30 * 10
    # Held chunks stay under the bound, overshot at most by the last profile's own chunks;
    # plus the jobs the task threads run. Unbounded, the 30 users' ~1,200 chunks were held.
    assert running.samples > 10
    assert running.peak <= MAX_HELD + largest_user + THREADS, (running.peak, largest_user)
