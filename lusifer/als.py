"""Explicit-feedback matrix factorisation by alternating least squares, in numpy.

Why our own: the well-kept Python ALS libraries target *implicit* feedback (``implicit``
weights binary preferences by confidence, so its scores are not on the rating scale), and
Spark's ALS needs a JVM. This is ALS-WR (Zhou et al., 2008, "Large-scale parallel
collaborative filtering for the Netflix prize"): ratings are modelled as
``mu + b_u + b_i + p_u · q_i``; each half-step solves one ridge regression per user (or
item) in closed form, with the penalty scaled by that user's (item's) number of ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ALSModel", "fit_als"]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


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


def _groups(keys: Ints, n: int) -> list[Ints]:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(n)]


def _half_step(
    groups: list[Ints], other: Ints, other_factors: Floats, target: Floats, reg: float
) -> tuple[Floats, Floats]:
    """Solve every row's bias and factors given the other side's factors."""
    rank = other_factors.shape[1]
    bias = np.zeros(len(groups))
    factors = np.zeros((len(groups), rank))
    for row, idx in enumerate(groups):
        # Design [1, q_i]: the bias is one more coefficient of the same ridge regression.
        design = np.hstack([np.ones((idx.size, 1)), other_factors[other[idx]]])
        gram = design.T @ design + reg * max(idx.size, 1) * np.eye(rank + 1)
        solution = np.linalg.solve(gram, design.T @ target[idx])
        bias[row], factors[row] = solution[0], solution[1:]
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
    by_user, by_item = _groups(u, user_ids.size), _groups(i, item_ids.size)
    b_u, p = np.zeros(user_ids.size), np.zeros((user_ids.size, n_factors))
    for _ in range(n_iters):
        b_u, p = _half_step(by_user, i, q, r - mu - b_i[i], reg)
        b_i, q = _half_step(by_item, u, p, r - mu - b_u[u], reg)
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
