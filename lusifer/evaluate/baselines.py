"""Collaborative-filtering baselines: fit on a fold's training split, predict given pairs.

The simulator is compared with classic methods on exactly the same test ratings. Every
baseline is fitted on the full training split of a fold with a fixed seed and predicts a
continuous rating in 1..5; ``to_scale`` gives the whole-star version, the fair comparison
for the simulator's integer answers. scikit-surprise provides BaselineOnly, KNNBaseline,
SVD, SVD++ and NMF; the global mean and ALS (``lusifer.evaluate.als``) are ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lusifer.core.errors import ConfigurationError
from lusifer.data import Fold, Rating, Ratings
from lusifer.evaluate.als import fit_als, tune_reg

__all__ = [
    "BASELINES",
    "BASELINE_VERSION",
    "Baseline",
    "RatingTriples",
    "fold_predictions",
    "parse_methods",
    "predict_baseline",
    "to_scale",
]

# Bumped whenever a baseline's parameters change, so cached predictions are not reused.
# 2: ALS chooses its penalty on held-out training ratings.
BASELINE_VERSION = "2"
RATING_RANGE = (1.0, 5.0)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class RatingTriples:
    """Ratings as three aligned arrays."""

    users: Ints
    items: Ints
    ratings: Floats

    @classmethod
    def of(cls, ratings: Sequence[Rating]) -> RatingTriples:
        """Arrays of a sequence of ratings, in the same order."""
        if isinstance(ratings, Ratings):
            # A fold's columns: no record is built (the dtypes are those of the records').
            return cls(
                ratings.user_ids.astype(np.int64),
                ratings.item_ids.astype(np.int64),
                ratings.ratings.astype(np.float64),
            )
        rows = np.array([(r.user_id, r.item_id, r.rating) for r in ratings], dtype=np.int64)
        rows = rows.reshape(-1, 3)
        return cls(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.float64))


def to_scale(pred: ArrayLike) -> Floats:
    """Round to the nearest star (halves to even, as ``np.rint``) and clip to 1..5."""
    return np.clip(np.rint(np.asarray(pred, dtype=np.float64)), *RATING_RANGE)


def _global_mean(train: RatingTriples, users: Ints, items: Ints, seed: int) -> Floats:
    return np.full(users.shape, float(train.ratings.mean()))


def _als(train: RatingTriples, users: Ints, items: Ints, seed: int) -> Floats:
    # The penalty is chosen on held-out training ratings, never on the test ratings.
    reg = tune_reg(train.users, train.items, train.ratings, seed=seed, rating_range=RATING_RANGE)
    model = fit_als(
        train.users, train.items, train.ratings, reg=reg, seed=seed, rating_range=RATING_RANGE
    )
    return model.predict(users, items)


def _surprise(factory: Callable[[int], Any]) -> Callable[[RatingTriples, Ints, Ints, int], Floats]:
    def predict(train: RatingTriples, users: Ints, items: Ints, seed: int) -> Floats:
        import surprise  # a compiled dependency only the evaluation needs

        class _Ratings(surprise.Dataset):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__(surprise.Reader(rating_scale=RATING_RANGE))

        rows = zip(train.users.tolist(), train.items.tolist(), train.ratings.tolist(), strict=True)
        trainset = _Ratings().construct_trainset([(u, i, r, None) for u, i, r in rows])
        algo = factory(seed)
        algo.fit(trainset)
        # Unknown users or items get surprise's default, the global mean (clipped like all).
        est = [algo.predict(u, i).est for u, i in zip(users.tolist(), items.tolist(), strict=True)]
        return np.clip(np.asarray(est, dtype=np.float64), *RATING_RANGE)

    return predict


def _surprise_algo(name: str, **params: Any) -> Callable[[int], Any]:
    def make(seed: int) -> Any:
        import surprise

        cls = getattr(surprise, name)
        seeded = {"random_state": seed} if name in ("SVD", "SVDpp", "NMF") else {}
        return cls(**params, **seeded)

    return make


@dataclass(frozen=True)
class Baseline:
    """A named method; ``predict(train, users, items, seed)`` gives continuous ratings."""

    name: str
    label: str
    predict: Callable[[RatingTriples, Ints, Ints, int], Floats]
    slow: bool = False


# Library defaults throughout (surprise 1.1: SVD 100 factors / 20 epochs, NMF 15 factors),
# except KNNBaseline, which uses the item-based Pearson-baseline similarity surprise's
# documentation recommends for it; ALS-WR uses 20 factors and 15 sweeps, with lambda chosen
# from ``REG_GRID`` on a seeded 10 % hold-out of the training ratings (``tune_reg``).
BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("global_mean", "Global mean", _global_mean),
        Baseline(
            "baseline_only",
            "BaselineOnly",
            _surprise(_surprise_algo("BaselineOnly", verbose=False)),
        ),
        Baseline(
            "knn_baseline",
            "KNNBaseline",
            _surprise(
                _surprise_algo(
                    "KNNBaseline",
                    sim_options={"name": "pearson_baseline", "user_based": False},
                    verbose=False,
                )
            ),
            slow=True,
        ),
        Baseline("svd", "SVD", _surprise(_surprise_algo("SVD"))),
        Baseline(
            "svdpp", "SVD++", _surprise(_surprise_algo("SVDpp", cache_ratings=True)), slow=True
        ),
        Baseline("nmf", "NMF", _surprise(_surprise_algo("NMF"))),
        Baseline("als", "ALS", _als),
    )
}


def parse_methods(text: str | None) -> tuple[str, ...]:
    """Method names from ``all``, ``fast`` (no KNN, no SVD++), ``none`` or a comma list."""
    value = (text or "all").strip().lower()
    if value == "all":
        return tuple(BASELINES)
    if value == "fast":
        return tuple(name for name, b in BASELINES.items() if not b.slow)
    if value == "none":
        return ()
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigurationError(
            f"unknown baseline {', '.join(unknown)}: choose from all, fast, none, "
            + ", ".join(BASELINES)
        )
    return names


def predict_baseline(
    method: str, train: RatingTriples, users: ArrayLike, items: ArrayLike, *, seed: int = 0
) -> Floats:
    """Fit ``method`` on ``train`` and predict continuous ratings of the (user, item) pairs."""
    if method not in BASELINES:
        raise ConfigurationError(f"unknown baseline {method!r}: choose from {', '.join(BASELINES)}")
    u = np.asarray(users, dtype=np.int64).reshape(-1)
    i = np.asarray(items, dtype=np.int64).reshape(-1)
    return BASELINES[method].predict(train, u, i, seed)


def fold_predictions(fold: Fold, method: str, *, seed: int = 0) -> Floats:
    """Continuous predictions of ``method`` for every test rating of a fold, in test order."""
    test = RatingTriples.of(fold.test)
    return predict_baseline(method, RatingTriples.of(fold.train), test.users, test.items, seed=seed)
