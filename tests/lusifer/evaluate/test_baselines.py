"""Baselines: rounding, method names, determinism, and where they land on MovieLens u1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from lusifer.core.errors import ConfigurationError
from lusifer.data import Rating, load_movielens_100k
from lusifer.evaluate.baselines import (
    BASELINES,
    RatingTriples,
    fold_predictions,
    parse_methods,
    predict_baseline,
    to_scale,
)
from lusifer.evaluate.metrics import rmse


def test_to_scale_rounds_and_clips() -> None:
    # 0.2 clips to 1; halves go to the even star (1.5 -> 2, 2.5 -> 2); 7 clips to 5.
    assert to_scale([0.2, 1.5, 2.5, 3.49, 4.6, 7.0]).tolist() == [1, 2, 2, 3, 5, 5]


def test_parse_methods() -> None:
    assert parse_methods(None) == tuple(BASELINES)
    assert parse_methods("all") == (
        "global_mean", "baseline_only", "knn_baseline", "svd", "svdpp", "nmf", "als"
    )  # fmt: skip
    assert "svdpp" not in parse_methods("fast") and "knn_baseline" not in parse_methods("fast")
    assert parse_methods("none") == ()
    assert parse_methods(" svd, als ") == ("svd", "als")
    with pytest.raises(ConfigurationError, match="unknown baseline slope"):
        parse_methods("svd,slope")


TRAIN = RatingTriples.of(
    [
        Rating(1, 10, 5, 0),
        Rating(1, 11, 3, 0),
        Rating(2, 10, 4, 0),
        Rating(2, 12, 1, 0),
        Rating(3, 11, 2, 0),
        Rating(3, 12, 2, 0),
    ]
)


def test_global_mean_by_hand() -> None:
    # (5 + 3 + 4 + 1 + 2 + 2) / 6 = 17/6
    pred = predict_baseline("global_mean", TRAIN, [1, 99], [12, 10])
    assert pred.tolist() == pytest.approx([17 / 6, 17 / 6])


@pytest.mark.parametrize("method", list(BASELINES))
def test_every_baseline_is_seeded_and_in_range(method: str) -> None:
    users, items = [1, 2, 3, 99], [12, 11, 10, 10]  # user 99 is unknown
    a = predict_baseline(method, TRAIN, users, items, seed=0)
    b = predict_baseline(method, TRAIN, users, items, seed=0)
    assert np.array_equal(a, b)
    assert a.shape == (4,)
    assert np.all((a >= 1.0) & (a <= 5.0))


def test_unknown_method_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        predict_baseline("slope_one", TRAIN, [1], [10])


# Literature for MovieLens 100K (surprise's benchmark, 5-fold: SVD 0.934, BaselineOnly 0.944;
# fold u1 is known to be a little harder): the continuous RMSE lands in these ranges.
U1_RANGES = {
    "global_mean": (1.10, 1.20),
    "baseline_only": (0.93, 0.97),
    "svd": (0.93, 0.96),
    "als": (0.91, 0.96),
}


def test_baselines_on_movielens_u1(data_dir: Path) -> None:
    fold = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",)).folds["u1"]
    true = np.array([r.rating for r in fold.test], dtype=float)
    started = time.perf_counter()
    for method, (low, high) in U1_RANGES.items():
        pred = fold_predictions(fold, method, seed=0)
        assert pred.shape == true.shape
        continuous = rmse(true, pred)
        assert low <= continuous <= high, f"{method}: RMSE {continuous:.4f}"
        if method != "global_mean":
            # Whole stars lose information: rounding costs a learned model accuracy.
            assert rmse(true, to_scale(pred)) > continuous
    assert time.perf_counter() - started < 60
