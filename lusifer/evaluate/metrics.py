"""Accuracy of simulated ratings against true ones: pure functions over arrays (paper §6).

Every function takes array-likes of true and predicted ratings of the same length. Empty
input gives NaN rather than an exception, so a fold with no answered items still reports.
NaN inside the inputs propagates into the result. Percentages are on a 0..100 scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "RatingMetrics",
    "close_match_pct",
    "exact_match_pct",
    "mae",
    "mean_std",
    "off_by_one_pct",
    "pearson",
    "rmse",
    "summarize",
]


def _pair(true: ArrayLike, pred: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"true has {t.size} ratings but pred has {p.size}: pass aligned arrays")
    return t, p


def _pct(mask: NDArray[np.bool_]) -> float:
    return float(100.0 * mask.mean()) if mask.size else math.nan


def rmse(true: ArrayLike, pred: ArrayLike) -> float:
    """Root mean squared error."""
    t, p = _pair(true, pred)
    return float(np.sqrt(np.mean((p - t) ** 2))) if t.size else math.nan


def mae(true: ArrayLike, pred: ArrayLike) -> float:
    """Mean absolute error."""
    t, p = _pair(true, pred)
    return float(np.mean(np.abs(p - t))) if t.size else math.nan


def pearson(true: ArrayLike, pred: ArrayLike) -> float:
    """Pearson correlation; NaN for fewer than 2 points or when either side is constant.

    A constant side (e.g. a simulator that answers 4 to everything) has no variance, so the
    correlation is undefined; NaN says so instead of a misleading 0.
    """
    t, p = _pair(true, pred)
    # ptp == 0 rather than std == 0: the mean of equal floats can differ from them by an ulp.
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return math.nan
    dt, dp = t - t.mean(), p - p.mean()
    r = float(np.sum(dt * dp) / math.sqrt(float(np.sum(dt * dt) * np.sum(dp * dp))))
    return max(-1.0, min(1.0, r))  # rounding can push |r| a hair past 1


def _abs_rounded_diff(true: ArrayLike, pred: ArrayLike) -> NDArray[np.float64]:
    # The simulator answers whole stars; a fractional prediction counts as its nearest star
    # (np.rint: halves go to the even neighbour).
    t, p = _pair(true, pred)
    return np.abs(np.rint(p) - t)


def exact_match_pct(true: ArrayLike, pred: ArrayLike) -> float:
    """Percentage of predictions that, rounded to the nearest integer, equal the truth."""
    return _pct(_abs_rounded_diff(true, pred) == 0)


def off_by_one_pct(true: ArrayLike, pred: ArrayLike) -> float:
    """Percentage of rounded predictions exactly one star away from the truth."""
    return _pct(_abs_rounded_diff(true, pred) == 1)


def close_match_pct(true: ArrayLike, pred: ArrayLike) -> float:
    """Percentage of rounded predictions at most one star away (exact + off-by-one)."""
    return _pct(_abs_rounded_diff(true, pred) <= 1)


# The six figures of the paper's table, in its order: every summary across folds uses these.
METRIC_FIELDS = ("rmse", "mae", "pearson", "exact_match_pct", "off_by_one_pct", "close_match_pct")


@dataclass(frozen=True, slots=True)
class RatingMetrics:
    """All rating metrics of one set of predictions; NaN everywhere when ``n`` is 0."""

    n: int
    rmse: float
    mae: float
    pearson: float
    exact_match_pct: float
    off_by_one_pct: float
    close_match_pct: float


def summarize(true: ArrayLike, pred: ArrayLike) -> RatingMetrics:
    """Compute every rating metric at once."""
    t, p = _pair(true, pred)
    return RatingMetrics(
        n=int(t.size),
        rmse=rmse(t, p),
        mae=mae(t, p),
        pearson=pearson(t, p),
        exact_match_pct=exact_match_pct(t, p),
        off_by_one_pct=off_by_one_pct(t, p),
        close_match_pct=close_match_pct(t, p),
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across folds; NaN std for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    std = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    return float(np.mean(v)), std
