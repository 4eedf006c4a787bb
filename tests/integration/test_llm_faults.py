"""A faulty LLM, measured: 20 % mixed faults end in full coverage with retries and re-asks
counted; a permanent error stops the run within seconds with one line naming the cause."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console
from sqlmodel import Session, select

from bench.faults import fault_table, run_fault_bench
from lusifer.core.errors import ExitCode
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job, JobState
from lusifer.stub import FAULT_KINDS
from tests.integration.services import (
    VENV_BIN,
    celery_workers,
    postgres_schema,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration

KEY = "sk-faults-" + secrets.token_hex(6)


def test_twenty_percent_mixed_faults_end_in_full_coverage(data_dir: Path, tmp_path: Path) -> None:
    bench = run_fault_bench(data_dir, tmp_path, every_n=5)
    Console(width=100).print(fault_table(bench))
    assert bench.returncode == 0, bench.stderr + bench.stdout
    audit = bench.audit
    # Every kind was injected: 429, 5xx, timeouts, resets, and each kind of bad answer.
    assert set(audit.faults) == set(FAULT_KINDS)
    assert sum(audit.faults.values()) == audit.chat_requests // 5
    assert "100.0" in bench.stdout  # coverage of every fold
    assert audit.jobs_failed == 0
    assert audit.lost_results == 0 and audit.duplicated_results == 0
    assert audit.repeated_successful_calls == 0
    assert audit.unmatched_requests == 0
    # Retries and re-asks happened, and the report says how many.
    assert audit.retries > 0 and audit.reasks > 0
    assert bench.report_reasks == audit.reasks
    assert bench.report_retries is not None and 0 < bench.report_retries <= audit.retries


@pytest.mark.parametrize(
    ("fault", "change", "cause"),
    [
        ("401", {"api_key": "sk-rotated-" + secrets.token_hex(4)}, "rejected the API key"),
        ("unknown model", {"models": ["another-model"]}, "model 'stub-model'"),
    ],
)
def test_a_permanent_error_mid_run_stops_it_within_seconds(
    fault: str, change: dict[str, object], cause: str, data_dir: Path, tmp_path: Path
) -> None:
    run_id = f"permanent-{secrets.token_hex(3)}"
    with (
        postgres_schema("lusifer_permanent") as url,
        stub_server("--latency", "0.3", api_key=KEY) as stub,
    ):
        create_tables(get_engine(url))
        env = service_env(url, f"perm-{secrets.token_hex(3)}", KEY)
        with celery_workers(env, tmp_path, count=1, threads=2):
            coordinator = subprocess.Popen(
                [
                    str(VENV_BIN / "lusifer"),
                    *("run", "--base-url", stub.base_url, "--model", "stub-model"),
                    *("--folds", "u1", "--users", "2,3,8,24", "--chunk-size", "5"),
                    *("--data-dir", str(data_dir), "--run-id", run_id),
                ],
                env={**env, "COLUMNS": "200"},
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while not _done_jobs(url, run_id):
                assert time.monotonic() < deadline, "the run never got going"
                time.sleep(0.1)
            # The key is revoked, or the model withdrawn, while the run is under way.
            stub.configure(**change)
            stdout, stderr = coordinator.communicate(timeout=60)
            stopped_at = time.time()
        first_error = min(r["ts"] for r in stub.requests() if r["status"] in (401, 404))
    elapsed = stopped_at - first_error
    print(f"\n{fault}: the run stopped {elapsed:.2f} s after the first refused call")
    assert coordinator.returncode == ExitCode.STOPPED
    assert cause in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stdout + stderr
    assert elapsed < 10  # within seconds (noisy on a shared machine)


def _done_jobs(url: str, run_id: str) -> int:
    with Session(get_engine(url)) as session:
        return len(
            session.exec(
                select(Job.id).where(Job.run_id == run_id, Job.state == JobState.DONE)
            ).all()
        )
