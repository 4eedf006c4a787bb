"""One fold's evaluation: every method on the same ratings, sliced, with fidelity and a CI.

Pure: it takes the fold (for users' training history), the scored (user, item, true rating)
triples and each method's predictions aligned with them, and computes everything the report
shows. Reading the database or caching baselines is the coordinator's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lusifer.data import Fold
from lusifer.evaluate.baselines import BASELINES, to_scale
from lusifer.evaluate.fidelity import Fidelity, fidelity
from lusifer.evaluate.metrics import METRIC_FIELDS, RatingMetrics, mean_std, summarize
from lusifer.evaluate.slices import (
    DEFAULT_COLD_K,
    DEFAULT_HISTORY_EDGES,
    BucketScore,
    cold_start_mask,
    history_lengths,
    scores_by_bucket,
)
from lusifer.evaluate.statistics import BootstrapCI, rmse_difference_ci

__all__ = [
    "PAPER_GPT35",
    "SIMULATOR",
    "FoldEvaluation",
    "MethodScore",
    "across_folds",
    "evaluate_fold",
    "method_label",
]

SIMULATOR = "simulator"
# The paper's published GPT-3.5 figures per fold (Ebrat et al., arXiv 2405.13362):
# RMSE and close match % (exact + off-by-one), for reference next to our numbers.
PAPER_GPT35: dict[str, tuple[float, float]] = {
    "u1": (1.33, 75.82),
    "u2": (1.30, 76.34),
    "u3": (1.29, 76.24),
    "u4": (1.31, 76.60),
    "u5": (1.32, 76.36),
}


def method_label(method: str, variant: str) -> str:
    """How a method row is named in tables: ``SVD``, ``SVD (rounded)``, ``Simulator``."""
    if method == SIMULATOR:
        return "Simulator"
    base = BASELINES[method].label if method in BASELINES else method
    return f"{base} (rounded)" if variant == "rounded" else base


@dataclass(frozen=True)
class MethodScore:
    """One method (one variant: continuous, rounded, or the simulator's integers) on a fold."""

    method: str
    variant: str
    overall: RatingMetrics
    cold: RatingMetrics
    buckets: tuple[BucketScore, ...]
    fidelity: Fidelity

    @property
    def label(self) -> str:
        """Display name of the row."""
        return method_label(self.method, self.variant)

    @property
    def key(self) -> str:
        """A unique key of the row across folds, e.g. ``svd/rounded``."""
        return f"{self.method}/{self.variant}"


@dataclass(frozen=True)
class FoldEvaluation:
    """Everything measured on one fold."""

    fold: str
    n_test: int  # test ratings of the fold
    n_scored: int  # ratings every method is scored on
    n_users: int
    cold_k: int
    n_cold_users: int
    n_cold_ratings: int
    history_edges: tuple[int, ...]
    methods: tuple[MethodScore, ...]
    best_baseline: str | None  # key of the lowest-RMSE baseline row
    bootstrap: BootstrapCI | None  # simulator minus best baseline

    def row(self, key: str) -> MethodScore | None:
        """The method row with this key, if present."""
        return next((m for m in self.methods if m.key == key), None)


def _score(
    method: str,
    variant: str,
    users: NDArray[np.int64],
    true: NDArray[np.float64],
    pred: NDArray[np.float64],
    history: NDArray[np.int64],
    cold: NDArray[np.bool_],
    edges: Sequence[int],
) -> MethodScore:
    return MethodScore(
        method=method,
        variant=variant,
        overall=summarize(true, pred),
        cold=summarize(true[cold], pred[cold]),
        buckets=tuple(scores_by_bucket(true, pred, users, history, edges)),
        fidelity=fidelity(users, true, pred),
    )


def evaluate_fold(
    fold: Fold,
    users: ArrayLike,
    true: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    *,
    cold_k: int = DEFAULT_COLD_K,
    history_edges: Sequence[int] = DEFAULT_HISTORY_EDGES,
    n_resamples: int = 1000,
    seed: int = 0,
) -> FoldEvaluation:
    """Score the simulator (key ``simulator``) and every baseline on the same ratings.

    Each baseline gets a continuous and a rounded (1..5) row. The bootstrap compares the
    simulator with the baseline row of lowest RMSE, resampling users.
    """
    u = np.asarray(users, dtype=np.int64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    history = history_lengths(fold.train.user_ids, u)
    cold = cold_start_mask(history, cold_k)
    rows: list[MethodScore] = []
    preds: dict[str, NDArray[np.float64]] = {}
    for method, values in predictions.items():
        p = np.asarray(values, dtype=np.float64).reshape(-1)
        if p.shape != t.shape:
            raise ValueError(f"{method} has {p.size} predictions for {t.size} ratings")
        variants = (
            [("integer", p)]
            if method == SIMULATOR
            else [("continuous", p), ("rounded", to_scale(p))]
        )
        for variant, v in variants:
            rows.append(_score(method, variant, u, t, v, history, cold, history_edges))
            preds[rows[-1].key] = v
    baselines = [r for r in rows if r.method != SIMULATOR and not math.isnan(r.overall.rmse)]
    best = min(baselines, key=lambda r: r.overall.rmse).key if baselines else None
    sim_key = f"{SIMULATOR}/integer"
    ci = None
    if best is not None and sim_key in preds:
        ci = rmse_difference_ci(
            t, preds[sim_key], preds[best], u, n_resamples=n_resamples, seed=seed
        )
    return FoldEvaluation(
        fold=fold.name,
        n_test=len(fold.test),
        n_scored=int(t.size),
        n_users=int(np.unique(u).size),
        cold_k=cold_k,
        n_cold_users=int(np.unique(u[cold]).size),
        n_cold_ratings=int(cold.sum()),
        history_edges=tuple(history_edges),
        methods=tuple(rows),
        best_baseline=best,
        bootstrap=ci,
    )


def across_folds(folds: Sequence[FoldEvaluation]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean ± std across folds of each metric, per method row key (rows present in all folds)."""
    keys = [m.key for m in folds[0].methods] if folds else []
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for key in keys:
        rows = [f.row(key) for f in folds]
        present = [r for r in rows if r is not None]
        if len(present) != len(folds):
            continue
        summary[key] = {
            name: mean_std([float(getattr(r.overall, name)) for r in present])
            for name in METRIC_FIELDS
        }
    return summary
