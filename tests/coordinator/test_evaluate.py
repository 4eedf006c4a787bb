"""Evaluating a stored run, a CSV of simulated ratings and the baselines on real u1 data."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from coordinator.baseline_cache import cached_predictions
from coordinator.evaluate import EvalOptions, evaluate_baselines, evaluate_csv, evaluate_run
from coordinator.report.as_json import report_to_dict
from lusifer.core.errors import DataError
from lusifer.data import Fold, Rating, load_movielens_100k
from lusifer.evaluate.metrics import rmse
from tests.coordinator.eval_fixtures import RUN_ID, USERS, simulated, store_run

FAST = EvalOptions(methods=("global_mean", "baseline_only"), n_resamples=200)


def _strict(data: object) -> object:
    def reject(token: str) -> float:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(json.dumps(data), parse_constant=reject)


def test_run_is_scored_with_baselines_on_the_same_ratings(data_dir: Path, tmp_path: Path) -> None:
    settings = store_run(data_dir, tmp_path)
    report = evaluate_run(RUN_ID, settings, FAST)
    (fold,) = report.folds
    u1 = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",)).folds["u1"]
    answered = [
        (r, s)
        for r in u1.test
        if r.user_id in USERS and (s := simulated(r.user_id, r.item_id, r.rating)) is not None
    ]
    assert fold.n_scored == len(answered)
    assert fold.n_users == len(USERS)
    sim = fold.row("simulator/integer")
    assert sim is not None
    assert sim.overall.rmse == pytest.approx(
        rmse([r.rating for r, _ in answered], [s for _, s in answered])
    )
    # Every method row has the same n: the same ratings.
    assert {m.overall.n for m in fold.methods} == {fold.n_scored}
    mean_row = fold.row("global_mean/continuous")
    assert mean_row is not None
    train_mean = np.mean([r.rating for r in u1.train])
    expected = rmse([r.rating for r, _ in answered], [train_mean] * len(answered))
    assert mean_row.overall.rmse == pytest.approx(expected)
    assert fold.best_baseline == "baseline_only/continuous"
    assert fold.bootstrap is not None and fold.bootstrap.n_units == len(USERS)
    assert fold.bootstrap.low <= fold.bootstrap.estimate <= fold.bootstrap.high
    assert report.usage[0].n_rated == fold.n_scored
    assert report.meta["prompt-set hash"] == "0123456789abcdef"
    data = _strict(report_to_dict(report))
    assert isinstance(data, dict)
    assert data["folds"][0]["paper_gpt35"] == {"rmse": 1.33, "close_match_pct": 75.82}
    assert data["across_folds"]["simulator/integer"]["rmse"]["std"] is None  # one fold


def test_a_csv_scores_exactly_like_the_run(data_dir: Path, tmp_path: Path) -> None:
    settings = store_run(data_dir, tmp_path)
    run = evaluate_run(RUN_ID, settings, FAST)
    u1 = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1", "u2"))
    lines = ["user_id,item_id,rating,simulated_rating"]
    for r in u1.folds["u1"].test:
        if r.user_id in USERS:
            s = simulated(r.user_id, r.item_id, r.rating)
            lines.append(f"{r.user_id},{r.item_id},{r.rating},{'' if s is None else s}")
    lines.append("1,99999,3,4")  # not a test rating of any fold
    csv_path = tmp_path / "sim.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    scored = evaluate_csv(csv_path, u1, ("u1", "u2"), FAST, settings)
    assert [f.fold for f in scored.folds] == ["u1"]
    assert any("u2: no row" in n for n in scored.notes)
    assert any("1 rows are not test ratings" in n for n in scored.notes)
    assert any("have no numeric rating" in n for n in scored.notes)
    a, b = run.folds[0], scored.folds[0]
    assert [m.key for m in a.methods] == [m.key for m in b.methods]
    for ma, mb in zip(a.methods, b.methods, strict=True):
        assert ma.overall == mb.overall
    assert a.bootstrap == b.bootstrap


def test_a_csv_with_no_matching_row_is_a_data_error(data_dir: Path, tmp_path: Path) -> None:
    dataset = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",))
    csv_path = tmp_path / "sim.csv"
    csv_path.write_text("user_id,item_id,rating\n1,99999,3\n")
    with pytest.raises(DataError, match=r"no row of sim\.csv"):
        evaluate_csv(csv_path, dataset, ("u1",), FAST, store_run(data_dir, tmp_path))


def test_baselines_on_the_whole_test_set(data_dir: Path, tmp_path: Path) -> None:
    dataset = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",))
    settings = store_run(data_dir, tmp_path)
    report = evaluate_baselines(dataset, ("u1",), FAST, settings)
    (fold,) = report.folds
    assert fold.n_scored == fold.n_test == 20000
    assert fold.bootstrap is None
    history = Counter(r.user_id for r in dataset.folds["u1"].train)
    cold = [r for r in dataset.folds["u1"].test if history[r.user_id] < 20]
    assert fold.n_cold_ratings == len(cold) > 0
    assert fold.n_cold_users == len({r.user_id for r in cold})
    row = fold.row("baseline_only/continuous")
    assert row is not None and 0.93 < row.overall.rmse < 0.97
    assert row.cold.rmse > row.overall.rmse  # users with little history are harder
    assert not math.isnan(row.buckets[0].rmse)


def test_cached_predictions_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fold = Fold.of(
        "u1",
        train=(Rating(1, 1, 4, 0), Rating(2, 1, 2, 0)),
        test=(Rating(1, 2, 5, 0), Rating(2, 2, 1, 0)),
    )
    first = cached_predictions(fold, ["global_mean"], seed=0, cache_dir=tmp_path)
    assert first["global_mean"].tolist() == [3.0, 3.0]
    calls: list[str] = []
    monkeypatch.setattr(
        "coordinator.baseline_cache.fold_predictions",
        lambda *a, **k: calls.append("fit") or np.zeros(2),
    )
    again = cached_predictions(fold, ["global_mean"], seed=0, cache_dir=tmp_path)
    assert calls == [] and again["global_mean"].tolist() == [3.0, 3.0]
    other_seed = cached_predictions(fold, ["global_mean"], seed=1, cache_dir=tmp_path)
    assert calls == ["fit"] and other_seed["global_mean"].tolist() == [0.0, 0.0]
