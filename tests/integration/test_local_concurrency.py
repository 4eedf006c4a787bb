"""Local mode (no broker or database configured: embedded Redis and PostgreSQL, local workers)
at its default concurrency, 80 calls in flight, against an instant stub: a whole fold
finishes, every rating once, and the run is found again by `resume`, `report` and `runs` in
new processes, which start the work directory's database again.

Before, on SQLite, the same run died before 100 users: workers ran out of pooled connections
queued on SQLite's lock ("QueuePool limit ... reached") and the coordinator stopped with
"database is locked"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from lusifer.core.errors import ExitCode
from lusifer.stub import StubConfig, StubServer
from tests.local_db import local_database

pytestmark = pytest.mark.integration
LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _lusifer(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    return subprocess.run(
        [LUSIFER, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_whole_fold_in_local_mode_at_default_concurrency(data_dir: Path, tmp_path: Path) -> None:
    with StubServer(StubConfig()) as stub:
        result = _lusifer(
            tmp_path,
            "run",
            "--data-dir",
            str(data_dir / "ml-100k"),
            "--folds",
            "u1",
            "--base-url",
            stub.base_url,
            "--model",
            "stub-model",
            "--run-id",
            "whole-u1",
        )
        assert result.returncode == ExitCode.OK, result.stderr + result.stdout[-3000:]
        again = _lusifer(tmp_path, "resume", "whole-u1")
        assert again.returncode == ExitCode.OK, again.stderr + again.stdout[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    # Every command stopped the database when it ended; the test joins it like a command.
    assert not (tmp_path / "lusifer-runs" / "lusifer.db").exists()
    with local_database(tmp_path / "lusifer-runs") as conn:
        users, rated, stored, distinct = conn.execute(
            text(
                "SELECT COUNT(DISTINCT user_id), COUNT(rating), COUNT(*), "
                "COUNT(DISTINCT fold || '/' || user_id || '/' || item_id) "
                "FROM simulatedrating WHERE run_id = 'whole-u1'"
            )
        ).one()
        failed = conn.execute(
            text("SELECT COUNT(*) FROM job WHERE run_id = 'whole-u1' AND state != 'done'")
        ).scalar_one()
    # u1.test: 20,000 ratings of 459 users, each rated once, none failed.
    assert (users, rated, stored, distinct, failed) == (459, 20000, 20000, 20000, 0)
    report = _lusifer(tmp_path, "report", "whole-u1")
    assert report.returncode == 0 and "│ u1" in report.stdout, report.stderr
    runs = _lusifer(tmp_path, "runs")
    assert runs.returncode == 0 and "whole-u1" in runs.stdout, runs.stderr
