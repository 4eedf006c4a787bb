"""Rating metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from lusifer.evaluate.metrics import (
    RatingMetrics,
    close_match_pct,
    exact_match_pct,
    mae,
    mean_std,
    off_by_one_pct,
    pearson,
    rmse,
    summarize,
)

# true=[1,2,3,4,5], pred=[1,3,5,4,2]
#   pred - true   = [0, 1, 2, 0, -3]
#   RMSE          = sqrt((0+1+4+0+9)/5) = sqrt(2.8) = 1.6733200530681511
#   MAE           = (0+1+2+0+3)/5 = 1.2
#   Pearson       : both means are 3; dt=[-2,-1,0,1,2], dp=[-2,0,2,1,-1]
#                   sum(dt*dp) = 4+0+0+1-2 = 3; sum(dt^2) = 10; sum(dp^2) = 10 -> 3/10 = 0.3
#   |diff|        = [0,1,2,0,3] -> exact 2/5 = 40 %, off-by-one 1/5 = 20 %, close 3/5 = 60 %
TRUE = [1, 2, 3, 4, 5]
PRED = [1, 3, 5, 4, 2]


def test_rmse_by_hand() -> None:
    assert rmse(TRUE, PRED) == pytest.approx(math.sqrt(2.8))
    assert rmse(TRUE, PRED) == pytest.approx(1.6733200530681511)


def test_mae_by_hand() -> None:
    assert mae(TRUE, PRED) == pytest.approx(1.2)


def test_pearson_by_hand() -> None:
    assert pearson(TRUE, PRED) == pytest.approx(0.3)


def test_match_percentages_by_hand() -> None:
    assert exact_match_pct(TRUE, PRED) == pytest.approx(40.0)
    assert off_by_one_pct(TRUE, PRED) == pytest.approx(20.0)
    assert close_match_pct(TRUE, PRED) == pytest.approx(60.0)


def test_perfect_predictions() -> None:
    assert rmse(TRUE, TRUE) == 0.0
    assert mae(TRUE, TRUE) == 0.0
    assert pearson(TRUE, TRUE) == pytest.approx(1.0)
    assert exact_match_pct(TRUE, TRUE) == 100.0
    assert off_by_one_pct(TRUE, TRUE) == 0.0
    assert close_match_pct(TRUE, TRUE) == 100.0


def test_pearson_perfectly_reversed() -> None:
    # dt = [-1,0,1], dp = [1,0,-1]: sum(dt*dp) = -2, sqrt(2*2) = 2 -> -1
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_match_rounds_fractional_predictions_to_nearest_star() -> None:
    # rint([1.4, 2.6, 2.5, 3.5]) = [1, 3, 2, 4] (halves go to even); true = [1, 2, 3, 4]
    # |diff| = [0, 1, 1, 0] -> exact 50 %, off-by-one 50 %, close 100 %
    true, pred = [1, 2, 3, 4], [1.4, 2.6, 2.5, 3.5]
    assert exact_match_pct(true, pred) == pytest.approx(50.0)
    assert off_by_one_pct(true, pred) == pytest.approx(50.0)
    assert close_match_pct(true, pred) == pytest.approx(100.0)
    # RMSE uses the raw predictions: diffs [0.4, 0.6, -0.5, -0.5]
    # squares 0.16 + 0.36 + 0.25 + 0.25 = 1.02 -> sqrt(1.02 / 4) = sqrt(0.255)
    assert rmse(true, pred) == pytest.approx(math.sqrt(0.255))


def test_constant_predictions_make_pearson_nan() -> None:
    assert math.isnan(pearson([1, 2, 3, 4], [4, 4, 4, 4]))
    assert math.isnan(pearson([3, 3, 3], [1, 2, 5]))
    # Equal non-representable floats: the mean may differ by an ulp, still no variance.
    assert math.isnan(pearson([1, 2, 3], [0.1, 0.1, 0.1]))


def test_pearson_needs_two_points() -> None:
    assert math.isnan(pearson([4], [5]))


def test_empty_input_is_nan_not_an_error() -> None:
    for metric in (rmse, mae, pearson, exact_match_pct, off_by_one_pct, close_match_pct):
        assert math.isnan(metric([], []))
    summary = summarize([], [])
    assert summary.n == 0
    assert all(
        math.isnan(v)
        for v in (
            summary.rmse,
            summary.mae,
            summary.pearson,
            summary.exact_match_pct,
            summary.off_by_one_pct,
            summary.close_match_pct,
        )
    )


def test_summarize_collects_every_metric() -> None:
    summary = summarize(TRUE, PRED)
    assert isinstance(summary, RatingMetrics)
    assert summary.n == 5
    assert summary.rmse == pytest.approx(math.sqrt(2.8))
    assert summary.mae == pytest.approx(1.2)
    assert summary.pearson == pytest.approx(0.3)
    assert summary.exact_match_pct == pytest.approx(40.0)
    assert summary.off_by_one_pct == pytest.approx(20.0)
    assert summary.close_match_pct == pytest.approx(60.0)


def test_misaligned_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="aligned"):
        rmse([1, 2, 3], [1, 2])


def test_mean_std_uses_sample_std() -> None:
    # mean = 2.5; deviations ±1.5, ±0.5 -> sum of squares 5; 5 / (4-1) = 5/3
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))


def test_mean_std_of_one_value_has_nan_std() -> None:
    mean, std = mean_std([1.3])
    assert mean == pytest.approx(1.3)
    assert math.isnan(std)


def test_mean_std_of_nothing_is_nan() -> None:
    mean, std = mean_std([])
    assert math.isnan(mean)
    assert math.isnan(std)
