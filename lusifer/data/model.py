"""The in-memory form of a ratings dataset: users, items, ratings and train/test folds."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Ids and counts are stored in 32-bit integer columns: a larger id is refused where it is read.
INT32_LIMIT = 2**31


@dataclass(frozen=True, slots=True)
class User:
    """A user and whatever demographics the dataset knows about them."""

    user_id: int
    age: int | None
    gender: str | None
    occupation: str | None
    # A ready-made description (the reference code's ``user_info`` column) wins over the fields.
    info: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """An item (a movie for MovieLens) with the text the prompts describe it by."""

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    overview: str | None


@dataclass(frozen=True, slots=True)
class Rating:
    """One explicit rating on the 1..5 scale; ``timestamp`` is seconds since the epoch."""

    user_id: int
    item_id: int
    rating: int
    timestamp: int


def _group_by_user(ratings: tuple[Rating, ...]) -> dict[int, list[Rating]]:
    grouped: dict[int, list[Rating]] = {}
    for rating in ratings:
        grouped.setdefault(rating.user_id, []).append(rating)
    return grouped


@dataclass(frozen=True, slots=True)
class Fold:
    """One train/test split; the groupings are computed on each call, so keep the result."""

    name: str
    train: tuple[Rating, ...]
    test: tuple[Rating, ...]

    def train_by_user(self) -> dict[int, list[Rating]]:
        """Training ratings per user, oldest first (ties broken by item id)."""
        grouped = _group_by_user(self.train)
        for ratings in grouped.values():
            # Profiles are built from the history in the order the user lived it.
            ratings.sort(key=lambda r: (r.timestamp, r.item_id))
        return grouped

    def test_by_user(self) -> dict[int, list[Rating]]:
        """Test ratings per user, sorted by item id so prompts are reproducible."""
        grouped = _group_by_user(self.test)
        for ratings in grouped.values():
            ratings.sort(key=lambda r: r.item_id)
        return grouped


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded dataset; ``fingerprint`` is the sha256 of everything it was built from."""

    name: str
    users: Mapping[int, User]
    items: Mapping[int, Item]
    folds: Mapping[str, Fold]
    fingerprint: str


def ratings_from_tables(tables: Sequence[NDArray[np.int64]]) -> list[tuple[Rating, ...]]:
    """Turn (n, 4) tables of user, item, rating, timestamp into Ratings, sharing equal ones."""
    rows = np.concatenate([t.reshape(-1, 4) for t in tables]) if tables else np.empty((0, 4))
    rows = rows.astype(np.int64)
    # Each rating of MovieLens sits in five fold files; building one object per distinct
    # (user, item) pair cuts load time and memory five-fold. Dense indices avoid overflow.
    _, users = np.unique(rows[:, 0], return_inverse=True)
    _, items = np.unique(rows[:, 1], return_inverse=True)
    key = users.reshape(-1) * (int(items.max(initial=0)) + 1) + items.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if not np.array_equal(rows, rows[first][inverse]):
        # Two files rate the same pair differently: keep every row as its own Rating.
        first, inverse = np.arange(len(rows)), np.arange(len(rows))
    shared = np.empty(len(first), dtype=object)
    shared[:] = [Rating(*row) for row in rows[first].tolist()]
    bounds = np.cumsum([0, *(t.size // 4 for t in tables)])
    return [tuple(shared[inverse[a:b]].tolist()) for a, b in itertools.pairwise(bounds)]
