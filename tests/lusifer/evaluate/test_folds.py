"""One fold's evaluation on a small fold whose numbers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lusifer.data import Fold, Rating
from lusifer.evaluate.folds import SIMULATOR, across_folds, evaluate_fold, method_label


def _fold(name: str = "u1") -> Fold:
    # User 1 has 25 training ratings, user 2 has 3: with K = 20 only user 2 is cold.
    train = tuple(Rating(1, 100 + k, 4, k) for k in range(25)) + tuple(
        Rating(2, 200 + k, 2, k) for k in range(3)
    )
    test = (Rating(1, 1, 5, 0), Rating(1, 2, 3, 0), Rating(2, 3, 1, 0), Rating(2, 4, 2, 0))
    return Fold.of(name, train, test)


USERS = [1, 1, 2, 2]
TRUE = [5, 3, 1, 2]


def test_rows_cold_slice_and_best_baseline() -> None:
    ev = evaluate_fold(
        _fold(),
        USERS,
        TRUE,
        {
            SIMULATOR: [4, 4, 3, 3],  # errors 1,1,2,1 -> RMSE sqrt(7/4)
            "svd": [4.6, 3.2, 1.4, 2.0],  # errors .4,.2,.4,0 -> RMSE sqrt(.36/4) = 0.3
            "global_mean": [3.0, 3.0, 3.0, 3.0],
        },
        n_resamples=200,
    )
    assert [m.key for m in ev.methods] == [
        "simulator/integer",
        "svd/continuous",
        "svd/rounded",
        "global_mean/continuous",
        "global_mean/rounded",
    ]
    assert ev.n_scored == 4 and ev.n_users == 2 and ev.n_test == 4
    assert ev.n_cold_users == 1 and ev.n_cold_ratings == 2
    sim = ev.row("simulator/integer")
    assert sim is not None
    assert sim.overall.rmse == pytest.approx(math.sqrt(7 / 4))
    # Cold slice = user 2: errors 2 and 1 -> RMSE sqrt(5/2)
    assert sim.cold.rmse == pytest.approx(math.sqrt(5 / 2))
    svd = ev.row("svd/continuous")
    assert svd is not None and svd.overall.rmse == pytest.approx(0.3)
    rounded = ev.row("svd/rounded")
    assert rounded is not None and rounded.overall.rmse == 0.0  # [5,3,1,2]: exact
    assert ev.best_baseline == "svd/rounded"
    assert ev.bootstrap is not None
    assert ev.bootstrap.estimate == pytest.approx(math.sqrt(7 / 4))
    assert ev.bootstrap.unit == "users" and ev.bootstrap.n_units == 2
    # History buckets: user 2 (3 ratings) in <20, user 1 (25) in 20-49.
    assert [b.n for b in sim.buckets] == [2, 2, 0, 0, 0]
    assert sim.fidelity.positivity_bias == pytest.approx(14 / 4 - 11 / 4)


def test_without_a_simulator_there_is_no_bootstrap() -> None:
    ev = evaluate_fold(_fold(), USERS, TRUE, {"svd": [4.6, 3.2, 1.4, 2.0]})
    assert ev.bootstrap is None and ev.best_baseline == "svd/rounded"


def test_misaligned_predictions_are_an_error() -> None:
    with pytest.raises(ValueError, match="svd"):
        evaluate_fold(_fold(), USERS, TRUE, {"svd": [1.0, 2.0]})


def test_across_folds_mean_and_std() -> None:
    a = evaluate_fold(_fold("u1"), USERS, TRUE, {SIMULATOR: [4, 4, 3, 3]}, n_resamples=10)
    b = evaluate_fold(_fold("u2"), USERS, TRUE, {SIMULATOR: [5, 3, 1, 2]}, n_resamples=10)
    summary = across_folds([a, b])
    mean, std = summary["simulator/integer"]["rmse"]
    values = [math.sqrt(7 / 4), 0.0]
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))


def test_labels() -> None:
    assert method_label(SIMULATOR, "integer") == "Simulator"
    assert method_label("svdpp", "continuous") == "SVD++"
    assert method_label("svd", "rounded") == "SVD (rounded)"
