"""Explicit-feedback matrix factorisation by alternating least squares, in numpy.

Why our own: the well-kept Python ALS libraries target *implicit* feedback (``implicit``
weights binary preferences by confidence, so its scores are not on the rating scale), and
Spark's ALS needs a JVM. This is ALS-WR (Zhou et al., 2008, "Large-scale parallel
collaborative filtering for the Netflix prize"): ratings are modelled as
``mu + b_u + b_i + p_u · q_i``; each half-step solves one ridge regression per user (or
item) in closed form, with the penalty scaled by that user's (item's) number of ratings.

The penalty lambda is chosen by ``tune_reg`` on a seeded hold-out of the *training* ratings
only; the test ratings a baseline is scored on never choose its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["REG_GRID", "ALSModel", "fit_als", "tune_reg"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

# Candidate per-rating penalties, around the 0.05-0.1 that ALS-WR's authors found best.
REG_GRID = (0.03, 0.05, 0.08, 0.12, 0.2)


@dataclass(frozen=True)
class ALSModel:
    """A fitted model; users and items unseen in training fall back on the biases we know."""

    mu: float
    user_index: dict[int, int]
    item_index: dict[int, int]
    user_bias: Floats
    item_bias: Floats
    user_factors: Floats
    item_factors: Floats
    rating_range: tuple[float, float]

    def predict(self, users: ArrayLike, items: ArrayLike) -> Floats:
        """Predicted ratings of (user, item) pairs, clipped to the rating range."""
        u = np.asarray(users, dtype=np.int64).reshape(-1)
        i = np.asarray(items, dtype=np.int64).reshape(-1)
        ui = np.array([self.user_index.get(int(x), -1) for x in u], dtype=np.int64)
        ii = np.array([self.item_index.get(int(x), -1) for x in i], dtype=np.int64)
        known_u, known_i = ui >= 0, ii >= 0
        pred = np.full(u.shape, self.mu, dtype=np.float64)
        pred[known_u] += self.user_bias[ui[known_u]]
        pred[known_i] += self.item_bias[ii[known_i]]
        both = known_u & known_i
        pred[both] += np.einsum(
            "nf,nf->n", self.user_factors[ui[both]], self.item_factors[ii[both]]
        )
        return np.clip(pred, *self.rating_range)


# Rows solved together: padded to the longest row of the batch, which sorting by length
# keeps close to the others.
_BATCH_ROWS = 64


def _grouping(keys: Ints, n: int) -> tuple[Ints, Ints]:
    """The ratings ordered by row, and the start of each row's run (plus the end)."""
    order = np.argsort(keys, kind="stable")
    return order, np.searchsorted(keys[order], np.arange(n + 1)).astype(np.int64)


def _half_step(
    order: Ints, bounds: Ints, other: Ints, other_factors: Floats, target: Floats, reg: float
) -> tuple[Floats, Floats]:
    """Solve every row's bias and factors given the other side's factors.

    Each row is one ridge regression on its ratings; rows of similar length are stacked,
    padded with zero rows (which add nothing to the normal equations), and solved as a batch.
    """
    counts = np.diff(bounds)
    size = other_factors.shape[1] + 1
    bias, factors = np.zeros(counts.size), np.zeros((counts.size, size - 1))
    by_length = np.argsort(counts, kind="stable")
    for start in range(0, counts.size, _BATCH_ROWS):
        rows = by_length[start : start + _BATCH_ROWS]
        offsets = np.arange(int(counts[rows].max()))
        valid = offsets[None, :] < counts[rows][:, None]
        ratings = order[np.where(valid, bounds[rows][:, None] + offsets[None, :], 0)]
        # Design [1, q_i]: the bias is one more coefficient of the same ridge regression.
        design = (
            np.concatenate([np.ones((*ratings.shape, 1)), other_factors[other[ratings]]], axis=2)
            * valid[:, :, None]
        )
        design_t = design.transpose(0, 2, 1)
        gram = design_t @ design + reg * counts[rows][:, None, None] * np.eye(size)
        rhs = design_t @ (target[ratings] * valid)[:, :, None]
        solution = np.linalg.solve(gram, rhs)[:, :, 0]
        bias[rows], factors[rows] = solution[:, 0], solution[:, 1:]
    return bias, factors


def fit_als(
    users: ArrayLike,
    items: ArrayLike,
    ratings: ArrayLike,
    *,
    n_factors: int = 20,
    reg: float = 0.1,
    n_iters: int = 15,
    seed: int = 0,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> ALSModel:
    """Fit ALS-WR on explicit ratings; ``reg`` is the per-rating ridge penalty (lambda)."""
    u_raw = np.asarray(users, dtype=np.int64).reshape(-1)
    i_raw = np.asarray(items, dtype=np.int64).reshape(-1)
    r = np.asarray(ratings, dtype=np.float64).reshape(-1)
    if not (u_raw.size == i_raw.size == r.size) or r.size == 0:
        raise ValueError("users, items and ratings must be non-empty and of equal length")
    user_ids, u = np.unique(u_raw, return_inverse=True)
    item_ids, i = np.unique(i_raw, return_inverse=True)
    u, i = u.reshape(-1).astype(np.int64), i.reshape(-1).astype(np.int64)
    mu = float(r.mean())
    rng = np.random.default_rng(seed)
    q = rng.normal(0.0, 0.1, (item_ids.size, n_factors))
    b_i = np.zeros(item_ids.size)
    by_user, by_item = _grouping(u, user_ids.size), _grouping(i, item_ids.size)
    b_u, p = np.zeros(user_ids.size), np.zeros((user_ids.size, n_factors))
    for _ in range(n_iters):
        b_u, p = _half_step(*by_user, i, q, r - mu - b_i[i], reg)
        b_i, q = _half_step(*by_item, u, p, r - mu - b_u[u], reg)
    return ALSModel(
        mu=mu,
        user_index={int(x): k for k, x in enumerate(user_ids)},
        item_index={int(x): k for k, x in enumerate(item_ids)},
        user_bias=b_u,
        item_bias=b_i,
        user_factors=p,
        item_factors=q,
        rating_range=rating_range,
    )


def tune_reg(
    users: ArrayLike,
    items: ArrayLike,
    ratings: ArrayLike,
    *,
    candidates: tuple[float, ...] = REG_GRID,
    holdout: float = 0.1,
    seed: int = 0,
    n_factors: int = 20,
    n_iters: int = 15,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> float:
    """The penalty of lowest RMSE on a seeded hold-out of the given (training) ratings.

    Each candidate is fitted on the other ratings and scored on the hold-out; the caller then
    fits the chosen penalty on all of them.
    """
    u = np.asarray(users, dtype=np.int64).reshape(-1)
    i = np.asarray(items, dtype=np.int64).reshape(-1)
    r = np.asarray(ratings, dtype=np.float64).reshape(-1)
    held = np.zeros(r.size, dtype=bool)
    held[np.random.default_rng(seed).permutation(r.size)[: round(holdout * r.size)]] = True
    if not held.any() or held.all():
        raise ValueError("too few ratings to hold some out for choosing the penalty")
    errors = []
    for reg in candidates:
        model = fit_als(
            u[~held],
            i[~held],
            r[~held],
            n_factors=n_factors,
            reg=reg,
            n_iters=n_iters,
            seed=seed,
            rating_range=rating_range,
        )
        errors.append(float(np.mean((model.predict(u[held], i[held]) - r[held]) ** 2)))
    return candidates[int(np.argmin(errors))]
