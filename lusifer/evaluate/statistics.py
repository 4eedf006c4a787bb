"""Statistical honesty: a paired bootstrap of the RMSE difference between two methods."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BootstrapCI", "rmse_difference_ci"]

_DRAWS_PER_BLOCK = 2_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """RMSE(a) - RMSE(b) on the full sample and its percentile confidence interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    unit: str  # what was resampled: "users" or "ratings"
    n_units: int
    seed: int


def rmse_difference_ci(
    true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Paired percentile bootstrap of RMSE(a) - RMSE(b) on the same ratings.

    With ``groups`` (user ids) whole users are resampled with replacement, keeping all of a
    user's ratings together: ratings of one user are correlated, so resampling them one by
    one would make the interval too narrow. Without ``groups`` single ratings are resampled.
    Both methods are scored on every resample, so the interval is of the paired difference.
    """
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    a = np.asarray(pred_a, dtype=np.float64).reshape(-1)
    b = np.asarray(pred_b, dtype=np.float64).reshape(-1)
    if not (t.shape == a.shape == b.shape):
        raise ValueError("true, pred_a and pred_b must be aligned arrays of one length")
    unit = "ratings" if groups is None else "users"
    if t.size == 0:
        return BootstrapCI(math.nan, math.nan, math.nan, level, n_resamples, unit, 0, seed)
    if groups is None:
        index = np.arange(t.size)
    else:
        _, index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        index = index.reshape(-1)
    n_units = int(index.max()) + 1
    # Per-unit sums make one resample a weighted sum over units instead of a gather of ratings.
    sse_a = np.bincount(index, weights=(a - t) ** 2, minlength=n_units)
    sse_b = np.bincount(index, weights=(b - t) ** 2, minlength=n_units)
    count = np.bincount(index, minlength=n_units).astype(np.float64)
    estimate = math.sqrt(sse_a.sum() / count.sum()) - math.sqrt(sse_b.sum() / count.sum())
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    step = max(1, _DRAWS_PER_BLOCK // n_units)  # bounded memory for rating-level resampling
    for start in range(0, n_resamples, step):
        draws = rng.integers(0, n_units, size=(min(step, n_resamples - start), n_units))
        n = count[draws].sum(axis=1)
        diffs[start : start + len(draws)] = np.sqrt(sse_a[draws].sum(axis=1) / n) - np.sqrt(
            sse_b[draws].sum(axis=1) / n
        )
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return BootstrapCI(
        estimate=float(estimate),
        low=float(low),
        high=float(high),
        level=level,
        n_resamples=n_resamples,
        unit=unit,
        n_units=n_units,
        seed=seed,
    )
