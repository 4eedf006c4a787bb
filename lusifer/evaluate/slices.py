"""Where a method fails: the cold-start slice and error by length of the user's history."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lusifer.evaluate.metrics import mae, rmse

__all__ = [
    "DEFAULT_COLD_K",
    "DEFAULT_HISTORY_EDGES",
    "BucketScore",
    "bucket_labels",
    "cold_start_mask",
    "history_bucket",
    "history_lengths",
    "scores_by_bucket",
]

DEFAULT_COLD_K = 20
# Bucket lower bounds after the first: [0,20) [20,50) [50,100) [100,200) [200,∞).
DEFAULT_HISTORY_EDGES = (20, 50, 100, 200)


def history_lengths(train_users: ArrayLike, users: ArrayLike) -> NDArray[np.int64]:
    """Number of training ratings of each user in ``users`` (0 for users never seen)."""
    ids, counts = np.unique(np.asarray(train_users, dtype=np.int64), return_counts=True)
    u = np.asarray(users, dtype=np.int64).reshape(-1)
    pos = np.searchsorted(ids, u)
    pos_clipped = np.minimum(pos, max(ids.size - 1, 0))
    found = (pos < ids.size) & (ids[pos_clipped] == u) if ids.size else np.zeros(u.shape, bool)
    return np.where(found, counts[pos_clipped] if ids.size else 0, 0).astype(np.int64)


def cold_start_mask(history: ArrayLike, k: int = DEFAULT_COLD_K) -> NDArray[np.bool_]:
    """Ratings whose user has fewer than ``k`` training ratings."""
    return np.asarray(history, dtype=np.int64).reshape(-1) < k


def history_bucket(
    history: ArrayLike, edges: Sequence[int] = DEFAULT_HISTORY_EDGES
) -> NDArray[np.int64]:
    """Bucket index of each history length: 0 below ``edges[0]``, len(edges) from the last."""
    return np.searchsorted(np.asarray(edges), np.asarray(history).reshape(-1), side="right").astype(
        np.int64
    )


def bucket_labels(edges: Sequence[int] = DEFAULT_HISTORY_EDGES) -> list[str]:
    """Human labels of the buckets, e.g. ``<20``, ``20-49`` (en dash), ``≥200``."""
    labels = [f"<{edges[0]}"]
    labels += [f"{a}–{b - 1}" for a, b in itertools.pairwise(edges)]
    labels.append(f"≥{edges[-1]}")
    return labels


@dataclass(frozen=True)
class BucketScore:
    """Error of one method on the ratings of users with a history length in one bucket."""

    label: str
    n: int
    n_users: int
    rmse: float
    mae: float


def scores_by_bucket(
    true: ArrayLike,
    pred: ArrayLike,
    users: ArrayLike,
    history: ArrayLike,
    edges: Sequence[int] = DEFAULT_HISTORY_EDGES,
) -> list[BucketScore]:
    """RMSE and MAE per history-length bucket; empty buckets are kept with NaN."""
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    u = np.asarray(users).reshape(-1)
    bucket = history_bucket(history, edges)
    scores = []
    for k, label in enumerate(bucket_labels(edges)):
        mask = bucket == k
        n = int(mask.sum())
        scores.append(
            BucketScore(
                label=label,
                n=n,
                n_users=int(np.unique(u[mask]).size),
                rmse=rmse(t[mask], p[mask]) if n else math.nan,
                mae=mae(t[mask], p[mask]) if n else math.nan,
            )
        )
    return scores
