"""Exporting a run's DataFrames: Parquet, CSV, one SQLite file; nothing half-written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from coordinator.api.export import default_target, export_results
from coordinator.api.stored import CALL_COLUMNS, PROFILE_COLUMNS, RATING_COLUMNS, Results
from lusifer.core.errors import ConfigurationError


def _results() -> Results:
    ratings = pd.DataFrame(
        [("u1", 1, 10, 4, 5, "r/u1/1/rating/0", None), ("u1", 1, 11, 2, None, "j", "bad answer")],
        columns=RATING_COLUMNS,
    )
    ratings["simulated_rating"] = ratings["simulated_rating"].astype("Int64")
    profiles = pd.DataFrame(
        [("u1", 1, 0, "likes drama", "first", [10, 11], "k1")], columns=PROFILE_COLUMNS
    )
    calls = pd.DataFrame(
        [("u1", "j", "k1", False, 0, "stub", 100, 20, 0, 0.1, 0.0, "{}", "text")],
        columns=CALL_COLUMNS,
    )
    return Results("r", "done", {"folds": ["u1"]}, ratings, profiles, calls)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_directory_formats_hold_every_table(fmt: str, tmp_path: Path) -> None:
    target = export_results(_results(), fmt, tmp_path / "out")
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    ratings = read(target / f"ratings.{fmt}")
    assert ratings["simulated_rating"].isna().tolist() == [False, True]
    assert ratings["reason"].tolist()[1] == "bad answer"
    assert read(target / f"profiles.{fmt}")["item_ids"].tolist() == ["[10, 11]"]
    assert read(target / f"calls.{fmt}")["prompt_tokens"].tolist() == [100]
    assert read(target / f"run.{fmt}")["status"].tolist() == ["done"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left


def test_sqlite_is_one_portable_file(tmp_path: Path) -> None:
    target = export_results(_results(), "sqlite", tmp_path / "run.sqlite")
    with sqlite3.connect(target) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"ratings", "profiles", "calls", "run"}
        rows = conn.execute("SELECT item_id, simulated_rating FROM ratings ORDER BY 1").fetchall()
    assert rows == [(10, 5), (11, None)]


def test_an_existing_target_is_kept_unless_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "run.sqlite"
    target.write_text("keep me")
    with pytest.raises(ConfigurationError, match="exists: choose another --output"):
        export_results(_results(), "sqlite", target)
    assert target.read_text() == "keep me"
    export_results(_results(), "sqlite", target, overwrite=True)
    assert target.read_bytes().startswith(b"SQLite format 3")


def test_unknown_format_and_default_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="choose parquet, csv, sqlite"):
        export_results(_results(), "xlsx", tmp_path / "x")
    assert default_target("api-rate-1", "sqlite") == Path("api-rate-1.sqlite")
    assert default_target("a:b", "csv") == Path("a_b-csv")
