"""`lusifer report --json/--html`, `compare`, `score` and `baselines` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lusifer.data import Dataset, load_movielens_100k
from lusifer.evaluate.metrics import rmse
from tests.coordinator.eval_fixtures import RUN_ID, USERS, simulated, store_run, write_csv_dataset

LUSIFER = str(Path(sys.executable).parent / "lusifer")


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    return subprocess.run(
        [LUSIFER, *args],
        cwd=cwd,
        env={**base, "COLUMNS": "200", "LUSIFER_CACHE_DIR": str(cwd / "cache"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_report_writes_json_and_html(data_dir: Path, tmp_path: Path) -> None:
    settings = store_run(data_dir, tmp_path)
    assert settings.database_url is not None
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    result = _run(
        [
            "report",
            RUN_ID,
            "--baselines",
            "global_mean",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ],
        tmp_path,
        LUSIFER_DATABASE_URL=settings.database_url,
    )
    assert result.returncode == 0, result.stderr
    assert "LLM usage" in result.stdout  # the plain report is still printed first
    assert "RMSE per fold" in result.stdout and "Global mean (rounded)" in result.stdout
    data = json.loads(out_json.read_text())
    assert data["source"] == "run" and data["meta"]["run"] == RUN_ID
    assert out_html.read_text().startswith("<!DOCTYPE html>")


def test_plain_report_is_unchanged(data_dir: Path, tmp_path: Path) -> None:
    settings = store_run(data_dir, tmp_path)
    assert settings.database_url is not None
    result = _run(["report", RUN_ID], tmp_path, LUSIFER_DATABASE_URL=settings.database_url)
    assert result.returncode == 0, result.stderr
    assert "LLM usage" in result.stdout and "RMSE per fold" not in result.stdout


def test_compare_prints_both_runs_and_the_baselines_on_shared_ratings(
    data_dir: Path, tmp_path: Path
) -> None:
    settings = store_run(data_dir, tmp_path)
    store_run(data_dir, tmp_path, run_id="other-run")
    assert settings.database_url is not None
    out_html, out_json = tmp_path / "c.html", tmp_path / "c.json"
    result = _run(
        ["compare", RUN_ID, "other-run", "--html", str(out_html), "--json", str(out_json),
         "--resamples", "50", "--baselines", "global_mean"],
        tmp_path,
        LUSIFER_DATABASE_URL=settings.database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "On the ratings both runs answered" in result.stdout
    assert "Both runs and the baselines on those ratings" in result.stdout
    assert "Global mean (rounded)" in result.stdout
    page = out_html.read_text()
    assert "other-run" in page and "Global mean (rounded)" in page
    (common,) = json.loads(out_json.read_text())["common"]
    u1 = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",)).folds["u1"]
    shared = [
        r.rating
        for r in u1.test
        if r.user_id in USERS and simulated(r.user_id, r.item_id, r.rating) is not None
    ]
    mean = float(np.mean([r.rating for r in u1.train]))
    assert common["n"] == len(shared)
    assert set(common["baselines"]) == {"global_mean/continuous", "global_mean/rounded"}
    assert common["baselines"]["global_mean/continuous"]["rmse"] == pytest.approx(
        rmse(shared, [mean] * len(shared))
    )
    assert common["baselines"]["global_mean/rounded"]["rmse"] == pytest.approx(
        rmse(shared, [round(mean)] * len(shared))
    )


def test_score_and_baselines(data_dir: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "sim.csv"
    csv_path.write_text("user_id,item_id,simulated_rating\n1,6,4\n1,10,3\n1,12,5\n2,13,2\n")
    result = _run(
        ["score", str(csv_path), "--folds", "u1", "--baselines", "global_mean",
         "--data-dir", str(data_dir)],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Simulator" in result.stdout and "u1 (n=4)" in result.stdout
    out_json = tmp_path / "b.json"
    result = _run(
        ["baselines", "--folds", "u1", "--methods", "global_mean,baseline_only",
         "--data-dir", str(data_dir), "--json", str(out_json)],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "BaselineOnly (rounded)" in result.stdout and "u1 (n=20000)" in result.stdout
    keys = json.loads(out_json.read_text())["across_folds"]
    assert set(keys) == {
        "global_mean/continuous",
        "global_mean/rounded",
        "baseline_only/continuous",
        "baseline_only/rounded",
    }


def test_bad_input_fails_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    for args, phrase in (
        (["baselines", "--methods", "slope", "--data-dir", str(data_dir)], "unknown baseline"),
        (["score", str(tmp_path / "none.csv"), "--data-dir", str(data_dir)], "cannot read"),
        (["report", "no-such-run", "--html", "x.html"], "holds no Lusifer runs"),
    ):
        result = _run(args, tmp_path, LUSIFER_DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0], result.stderr


OWN_COLUMNS = "user_id=uid,item_id=movie,rating=stars,timestamp=when,title=name"


def _own_files(tmp_path: Path) -> tuple[Dataset, list[str]]:
    """The small CSV dataset under other column names, and the options that read it."""
    dataset = write_csv_dataset(tmp_path)
    for name, old, new in (
        ("ratings.csv", "user_id,item_id,rating,timestamp", "uid,movie,stars,when"),
        ("items.csv", "item_id,title", "movie,name"),
    ):
        path = tmp_path / name
        path.write_text(path.read_text().replace(old, new, 1))
    options = ["--ratings-csv", str(tmp_path / "ratings.csv"), "--items-csv",
               str(tmp_path / "items.csv"), "--columns", OWN_COLUMNS, "--n-folds", "5"]  # fmt: skip
    return dataset, options


def test_baselines_and_score_on_own_csv_files(tmp_path: Path) -> None:
    dataset, own = _own_files(tmp_path)
    out = tmp_path / "b.json"
    result = _run(
        ["baselines", *own, "--folds", "f1,f3", "--methods", "global_mean,svd", "--json", str(out)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [f["fold"] for f in data["folds"]] == ["f1", "f3"]
    for fold_data in data["folds"]:
        fold = dataset.folds[fold_data["fold"]]
        assert fold_data["n_scored"] == len(fold.test) > 0
        mean = float(np.mean([r.rating for r in fold.train]))
        rows = {m["method"] + "/" + m["variant"]: m for m in fold_data["methods"]}
        assert rows["global_mean/continuous"]["overall"]["rmse"] == pytest.approx(
            rmse([r.rating for r in fold.test], [mean] * len(fold.test))
        )
    # Without --folds: every fold of the own data, f1..f5.
    result = _run(["baselines", *own, "--methods", "global_mean"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"f5 (n={len(dataset.folds['f5'].test)})" in result.stdout

    sim = tmp_path / "sim.csv"
    answered = dataset.folds["f2"].test[:12]
    sim.write_text(
        "user_id,item_id,rating\n"
        + "".join(f"{r.user_id},{r.item_id},{r.rating}\n" for r in answered)
    )
    out = tmp_path / "s.json"
    result = _run(
        [
            "score",
            str(sim),
            *own,
            "--folds",
            "f2",
            "--baselines",
            "global_mean",
            "--json",
            str(out),
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (fold_data,) = json.loads(out.read_text())["folds"]
    rows = {m["method"] + "/" + m["variant"]: m for m in fold_data["methods"]}
    assert fold_data["n_scored"] == 12
    assert rows["simulator/integer"]["overall"]["rmse"] == 0.0
    assert "global_mean/rounded" in rows


def test_own_csv_files_with_a_fold_they_lack_fail_with_one_line(tmp_path: Path) -> None:
    _, own = _own_files(tmp_path)
    for args, phrase in (
        (["baselines", *own, "--folds", "u1", "--methods", "global_mean"], "unknown folds u1"),
        (["score", str(tmp_path / "ratings.csv"), "--ratings-csv", str(tmp_path / "ratings.csv")],
         "needs --ratings-csv and --items-csv"),
    ):  # fmt: skip
        result = _run(args, tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in result.stderr
