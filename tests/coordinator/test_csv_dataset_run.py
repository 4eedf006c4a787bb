"""A run on a generic CSV dataset in local mode (embedded Redis and PostgreSQL, local workers)
against the stub LLM server: the column mapping and the seeded folds reach the report."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from lusifer.stub import StubConfig, StubServer
from tests.local_db import local_database

pytestmark = pytest.mark.integration
LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _write_dataset(root: Path) -> tuple[Path, Path]:
    rng = random.Random(3)
    ratings, items = root / "stars.csv", root / "films.csv"
    with items.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["movie", "name", "kinds", "blurb"])
        for i in range(1, 41):
            writer.writerow([i, f"Film {i} ({1980 + i})", "Drama|Comedy", f"A story number {i}."])
    with ratings.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "movie", "stars", "when"])
        for user in (1, 2, 3):
            for i in rng.sample(range(1, 41), 25):
                writer.writerow([user, i, rng.randint(1, 5), rng.randint(10**9, 2 * 10**9)])
    return ratings, items


def test_run_on_own_csv_files_with_a_column_mapping(tmp_path: Path) -> None:
    ratings, items = _write_dataset(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    columns = (
        "user_id=uid,item_id=movie,rating=stars,timestamp=when,title=name,genres=kinds,"
        "overview=blurb"
    )
    with StubServer(StubConfig()) as stub:
        result = subprocess.run(
            [
                LUSIFER,
                "run",
                "--ratings-csv",
                str(ratings),
                "--items-csv",
                str(items),
                "--columns",
                columns,
                "--n-folds",
                "5",
                "--folds",
                "f1,f2",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--run-id",
                "csv",
            ],
            cwd=tmp_path,
            env={**env, "COLUMNS": "120"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert stub.chat_request_count() > 0
    assert result.returncode == 0, result.stderr + result.stdout
    assert "│ f1" in result.stdout and "│ f2" in result.stdout
    with local_database(tmp_path / "lusifer-runs") as conn:
        n_rated = conn.execute(
            text("SELECT COUNT(*) FROM simulatedrating WHERE run_id='csv' AND rating IS NOT NULL")
        ).scalar_one()
        overview = conn.execute(
            text("SELECT overview FROM itemtext WHERE item_id = 7")
        ).scalar_one()
    # 75 ratings in 5 folds: each test fold holds a fifth of them.
    assert n_rated == 30
    assert overview == "A story number 7."


def test_a_wrong_column_mapping_is_one_clear_line(tmp_path: Path) -> None:
    ratings, items = _write_dataset(tmp_path)
    result = subprocess.run(
        [
            LUSIFER,
            "run",
            "--ratings-csv",
            str(ratings),
            "--items-csv",
            str(items),
            "--columns",
            "user_id=user",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "user" in line and "uid" in line
