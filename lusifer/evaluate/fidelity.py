"""Behavioural fidelity: do simulated ratings look like real ones, beyond point error?

Pure functions over aligned arrays of real and simulated ratings. Shares, KL divergence and
the confusion matrix work on the 1..5 scale (continuous predictions are rounded and clipped
first); mean, variance, the Wasserstein distance, positivity bias and correlations use the
values as given. Empty input gives NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import wasserstein_distance

from lusifer.evaluate.metrics import pearson

__all__ = [
    "SCALE",
    "Fidelity",
    "confusion_matrix",
    "fidelity",
    "kl_divergence",
    "per_user_correlation",
    "positivity_bias",
    "rating_counts",
    "rating_shares",
    "wasserstein",
]

SCALE = (1, 2, 3, 4, 5)
Floats = NDArray[np.float64]


def _values(x: ArrayLike) -> Floats:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _stars(x: ArrayLike) -> NDArray[np.int64]:
    return np.clip(np.rint(_values(x)), SCALE[0], SCALE[-1]).astype(np.int64)


def rating_counts(values: ArrayLike) -> NDArray[np.int64]:
    """How many ratings fall on each star 1..5 (after rounding and clipping)."""
    return np.bincount(_stars(values) - SCALE[0], minlength=len(SCALE)).astype(np.int64)


def rating_shares(values: ArrayLike) -> Floats:
    """Share of ratings on each star 1..5; NaN everywhere for no ratings."""
    counts = rating_counts(values)
    total = counts.sum()
    return counts / total if total else np.full(len(SCALE), math.nan)


def wasserstein(real: ArrayLike, sim: ArrayLike) -> float:
    """Earth mover's (Wasserstein-1) distance between the two rating distributions, in stars."""
    r, s = _values(real), _values(sim)
    return float(wasserstein_distance(r, s)) if r.size and s.size else math.nan


def kl_divergence(real: ArrayLike, sim: ArrayLike, alpha: float = 0.5) -> float:
    """KL(real ‖ simulated) in nats over stars 1..5, with ``alpha`` added to every count.

    The smoothing keeps the divergence finite when the simulator never uses a star that real
    users do (a small model answering only 3 and 4, say).
    """
    rc, sc = rating_counts(real), rating_counts(sim)
    if not rc.sum() or not sc.sum():
        return math.nan
    p = (rc + alpha) / (rc.sum() + alpha * len(SCALE))
    q = (sc + alpha) / (sc.sum() + alpha * len(SCALE))
    return float(np.sum(p * np.log(p / q)))


def confusion_matrix(real: ArrayLike, sim: ArrayLike) -> NDArray[np.int64]:
    """5x5 counts: row = real star, column = simulated star (both 1..5)."""
    r, s = _stars(real), _stars(sim)
    if r.shape != s.shape:
        raise ValueError(f"real has {r.size} ratings but sim has {s.size}: pass aligned arrays")
    n = len(SCALE)
    flat = np.bincount((r - SCALE[0]) * n + (s - SCALE[0]), minlength=n * n)
    return flat.reshape(n, n).astype(np.int64)


def per_user_correlation(
    users: ArrayLike, real: ArrayLike, sim: ArrayLike, min_ratings: int = 3
) -> tuple[float, int]:
    """Mean Pearson r within users, and how many users it averages.

    Only users with at least ``min_ratings`` ratings and non-constant real and simulated
    values count: a correlation is undefined otherwise. NaN when no user qualifies.
    """
    u = np.asarray(users).reshape(-1)
    r, s = _values(real), _values(sim)
    values: list[float] = []
    for user in np.unique(u):
        mask = u == user
        if mask.sum() >= min_ratings:
            corr = pearson(r[mask], s[mask])
            if not math.isnan(corr):
                values.append(corr)
    return (float(np.mean(values)) if values else math.nan), len(values)


def positivity_bias(real: ArrayLike, sim: ArrayLike) -> float:
    """Mean simulated rating minus mean real rating (positive: the simulator is kinder)."""
    r, s = _values(real), _values(sim)
    return float(s.mean() - r.mean()) if r.size and s.size else math.nan


def _var(x: Floats) -> float:
    # Population variance (ddof=0): a property of the distribution, not an estimate.
    return float(np.var(x)) if x.size else math.nan


@dataclass(frozen=True)
class Fidelity:
    """Distribution-level comparison of simulated and real ratings."""

    n: int
    real_counts: tuple[int, ...]
    sim_counts: tuple[int, ...]
    real_mean: float
    sim_mean: float
    real_var: float
    sim_var: float
    wasserstein: float
    kl: float
    per_user_r: float
    per_user_n: int
    positivity_bias: float
    confusion: tuple[tuple[int, ...], ...]

    @property
    def real_shares(self) -> tuple[float, ...]:
        """Share of each star 1..5 among real ratings."""
        return _shares(self.real_counts)

    @property
    def sim_shares(self) -> tuple[float, ...]:
        """Share of each star 1..5 among simulated ratings (rounded)."""
        return _shares(self.sim_counts)


def _shares(counts: tuple[int, ...]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(c / total if total else math.nan for c in counts)


def fidelity(users: ArrayLike, real: ArrayLike, sim: ArrayLike) -> Fidelity:
    """Every fidelity statistic of one set of simulated ratings at once."""
    r, s = _values(real), _values(sim)
    if r.shape != s.shape:
        raise ValueError(f"real has {r.size} ratings but sim has {s.size}: pass aligned arrays")
    corr, n_users = per_user_correlation(users, r, s)
    return Fidelity(
        n=int(r.size),
        real_counts=tuple(int(c) for c in rating_counts(r)),
        sim_counts=tuple(int(c) for c in rating_counts(s)),
        real_mean=float(r.mean()) if r.size else math.nan,
        sim_mean=float(s.mean()) if s.size else math.nan,
        real_var=_var(r),
        sim_var=_var(s),
        wasserstein=wasserstein(r, s),
        kl=kl_divergence(r, s),
        per_user_r=corr,
        per_user_n=n_users,
        positivity_bias=positivity_bias(r, s),
        confusion=tuple(tuple(int(c) for c in row) for row in confusion_matrix(r, s)),
    )
