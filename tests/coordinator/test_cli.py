"""The command line on bad input: one line naming the problem and the fix, exit 1, no
traceback, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local_db import nothing_written

LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    return subprocess.run(
        [LUSIFER, *args],
        cwd=cwd,
        env={**base, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


REMOTE = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["--data-dir", "/nonexistent/ml"], ["/nonexistent/ml"]),
        (["--prompt-set", "nope"], ["unknown prompt set 'nope'", "lusifer", "paper"]),
        (["--folds", "u9"], ["u9"]),
        (["--profile-batch", "50"], ["batch", "history"]),
        (["--chunk-size", "0"], ["chunk_size"]),
        (["--users", "1,x"], ["--users"]),
        (["--users", "99999"], ["unknown user ids"]),
        (["--structured-output", "xml"], ["structured_output"]),
        (["--max-cost", "1"], ["--max-cost", "--price-prompt"]),
        (["--max-cost", "1", "--batch-api"], ["--max-cost", "--batch-api"]),
        (["--batch-api", "--batch-discount", "1.5"], ["batch.discount"]),
        (["--batch-api", "--batch-poll-s", "0"], ["batch.poll_s"]),
    ],
    ids=[
        "missing-data-dir",
        "unknown-prompt-set",
        "unknown-fold",
        "batch-over-history",
        "chunk-zero",
        "users-not-integers",
        "unknown-user",
        "bad-output-mode",
        "max-cost-without-prices",
        "max-cost-with-batch-api",
        "batch-discount-over-1",
        "batch-poll-zero",
    ],
)
def test_bad_run_input_fails_cleanly(
    args: list[str], phrases: list[str], data_dir: Path, tmp_path: Path
) -> None:
    full = ["run", "--data-dir", str(data_dir), *REMOTE, "--max-users", "1", *args]
    result = _run(full, tmp_path)
    _assert_clean_failure(result, *phrases)
    assert nothing_written(tmp_path / "lusifer-runs")


def test_batch_api_without_an_endpoint_fails_cleanly(data_dir: Path, tmp_path: Path) -> None:
    result = _run(["run", "--data-dir", str(data_dir), "--batch-api"], tmp_path)
    _assert_clean_failure(result, "--batch-api", "--base-url")
    assert not (tmp_path / "lusifer-runs").exists()


def test_unreachable_broker_fails_cleanly(data_dir: Path, tmp_path: Path) -> None:
    result = _run(
        ["run", "--data-dir", str(data_dir), *REMOTE, "--folds", "u1", "--max-users", "1"],
        tmp_path,
        LUSIFER_BROKER_URL="redis://:s3cret@127.0.0.1:9/0",
        LUSIFER_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
    )
    _assert_clean_failure(result, "broker", "unreachable", "LUSIFER_BROKER_URL")
    assert "s3cret" not in result.stderr


def test_unreachable_database_fails_cleanly(data_dir: Path, tmp_path: Path) -> None:
    result = _run(
        ["run", "--data-dir", str(data_dir), *REMOTE, "--folds", "u1", "--max-users", "1"],
        tmp_path,
        LUSIFER_BROKER_URL="redis://127.0.0.1:6379/12",
        LUSIFER_DATABASE_URL="postgresql+psycopg://postgres:pw@127.0.0.1:9/test",
    )
    _assert_clean_failure(result, "database", "unreachable", "LUSIFER_DATABASE_URL")
    assert ":pw@" not in result.stderr


def test_unreachable_llm_fails_before_anything_is_stored(data_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    result = _run(
        [
            "run",
            "--data-dir",
            str(data_dir),
            *REMOTE,
            "--folds",
            "u1",
            "--max-users",
            "1",
            "--run-id",
            "nope",
        ],
        tmp_path,
        LUSIFER_DATABASE_URL=f"sqlite:///{db}",
    )
    _assert_clean_failure(result, "cannot connect to the LLM", "--base-url")
    assert not db.exists()
    status = _run(["status", "nope"], tmp_path, LUSIFER_DATABASE_URL=f"sqlite:///{db}")
    _assert_clean_failure(status, "holds no Lusifer runs")
    assert not db.exists()


def test_unknown_run_for_report_and_resume(tmp_path: Path) -> None:
    env = {"LUSIFER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    for command in ("report", "resume"):
        result = _run([command, "ghost"], tmp_path, **env)
        _assert_clean_failure(result, "holds no Lusifer runs", "LUSIFER_DATABASE_URL")


def test_dry_run_in_local_mode_starts_and_writes_nothing(data_dir: Path, tmp_path: Path) -> None:
    # No --base-url: a real run would start the local model server; a dry run must not.
    result = _run(
        ["run", "--data-dir", str(data_dir), "--folds", "u1,u2", "--max-users", "2", "--dry-run"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was called or written" in result.stdout
    for fold in ("u1", "u2", "total"):
        assert fold in result.stdout
    assert re.search(r"estimate: \d+ calls, \d+ prompt tokens", result.stdout)
    # No work dir (no SQLite file, no broker, no model server log) was created.
    assert list(tmp_path.iterdir()) == []
