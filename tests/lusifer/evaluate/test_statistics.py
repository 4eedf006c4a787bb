"""The paired bootstrap of an RMSE difference, on cases whose answer is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lusifer.evaluate.statistics import rmse_difference_ci


def test_identical_predictions_give_a_zero_interval() -> None:
    t = [1, 2, 3, 4, 5]
    ci = rmse_difference_ci(t, [2, 2, 2, 4, 4], [2, 2, 2, 4, 4], groups=[1, 1, 2, 2, 3])
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert ci.unit == "users"
    assert ci.n_units == 3


def test_a_constant_one_star_error_gives_exactly_one() -> None:
    # a is off by one everywhere and b is exact: every resample has RMSE(a) - RMSE(b) = 1.
    t = np.array([1, 2, 3, 4, 5, 3])
    ci = rmse_difference_ci(t, t + 1, t, n_resamples=200)
    assert ci.estimate == pytest.approx(1.0)
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.0)
    assert ci.unit == "ratings" and ci.n_units == 6


def test_two_users_by_hand() -> None:
    # User A: a misses by 2, b exact; user B: both exact.
    # Full sample: RMSE(a) = sqrt(4/2) = sqrt(2), RMSE(b) = 0 -> estimate sqrt(2).
    # Resamples: AA -> 2, AB or BA -> sqrt(2), BB -> 0, with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles of 1000 resamples are 0 and 2.
    ci = rmse_difference_ci([3, 3], [5, 3], [3, 3], groups=["A", "B"], seed=1)
    assert ci.estimate == pytest.approx(math.sqrt(2))
    assert ci.low == 0.0
    assert ci.high == pytest.approx(2.0)
    assert ci.n_resamples == 1000 and ci.level == 0.95


def test_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(5)
    t = rng.integers(1, 6, 300)
    a = np.clip(t + rng.normal(0, 1.2, 300), 1, 5)
    b = np.clip(t + rng.normal(0, 0.9, 300), 1, 5)
    users = np.repeat(np.arange(30), 10)
    first = rmse_difference_ci(t, a, b, users, seed=3)
    assert first == rmse_difference_ci(t, a, b, users, seed=3)
    assert first != rmse_difference_ci(t, a, b, users, seed=4)
    assert first.low <= first.estimate <= first.high


def test_resampling_users_widens_the_interval_when_a_users_errors_move_together() -> None:
    # Each user's error difference is shared by all 20 of their ratings: 20 users, not 400
    # independent observations, so the user-level interval must be wider.
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 20)
    t = np.full(400, 3.0)
    a = t + np.repeat(rng.normal(0, 1, 20), 20)
    b = t + rng.normal(0, 0.2, 400)
    by_user = rmse_difference_ci(t, a, b, users)
    by_rating = rmse_difference_ci(t, a, b)
    assert by_user.high - by_user.low > 1.5 * (by_rating.high - by_rating.low)


def test_empty_input_gives_nan() -> None:
    ci = rmse_difference_ci([], [], [])
    assert math.isnan(ci.estimate) and ci.n_units == 0


def test_misaligned_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="aligned"):
        rmse_difference_ci([1, 2], [1], [1, 2])
