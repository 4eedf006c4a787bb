"""A run's exit code says how it ended: 0 only when every job is done.

Local mode (embedded Redis, SQLite, local workers) against the stub LLM server, on a tiny CSV
dataset: a run whose every answer has the wrong keys ends with its table and exit 3, not 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lusifer.core.errors import ExitCode
from lusifer.stub import StubConfig, StubServer
from tests.coordinator.test_csv_dataset_run import _write_dataset

pytestmark = pytest.mark.integration
LUSIFER = str(Path(sys.executable).parent / "lusifer")
COLUMNS = "user_id=uid,item_id=movie,rating=stars,timestamp=when,title=name,genres=kinds"


def _lusifer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    return subprocess.run(
        [LUSIFER, *args],
        cwd=tmp_path,
        env={**env, "COLUMNS": "160", "LUSIFER_JOB_MAX_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run(tmp_path: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    ratings, items = _write_dataset(tmp_path)
    return _lusifer(
        tmp_path,
        "run",
        "--ratings-csv",
        str(ratings),
        "--items-csv",
        str(items),
        "--columns",
        COLUMNS,
        "--n-folds",
        "2",
        "--folds",
        "f1",
        "--base-url",
        base_url,
        "--model",
        "stub-model",
        "--max-reask",
        "0",
        "--run-id",
        "codes",
        *extra,
    )


def test_a_run_whose_every_answer_is_invalid_exits_3_with_its_table(tmp_path: Path) -> None:
    with StubServer(StubConfig(faults=["wrong_keys"], fault_rate=1.0)) as stub:
        result = _run(tmp_path, stub.base_url)
    assert result.returncode == ExitCode.JOBS_FAILED, result.stderr + result.stdout
    assert "│ f1" in result.stdout  # the table is still printed, with its coverage
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: run codes ended with"), result.stderr
    assert "jobs failed" in lines[-1] and "lusifer status codes" in lines[-1]
    assert "Traceback" not in result.stderr


def test_a_clean_run_exits_0_and_resume_refuses_a_cap_without_prices(tmp_path: Path) -> None:
    with StubServer(StubConfig()) as stub:
        result = _run(tmp_path, stub.base_url)
        assert result.returncode == ExitCode.OK, result.stderr + result.stdout
        again = _lusifer(tmp_path, "resume", "codes", "--max-cost", "1")
    assert again.returncode == ExitCode.ERROR, again.stderr
    assert "without prices" in again.stderr and "Traceback" not in again.stderr
