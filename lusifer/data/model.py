"""The in-memory form of a ratings dataset: users, items, ratings and train/test folds.

A fold's ratings are columns (``lusifer.data.ratings``), not one object per rating."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lusifer.data.ratings import Rating, Ratings

__all__ = ["INT32_LIMIT", "Dataset", "Fold", "Item", "Rating", "Ratings", "User"]

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
class Fold:
    """One train/test split; the groupings are computed on each call, so keep the result."""

    name: str
    train: Ratings
    test: Ratings

    @classmethod
    def of(cls, name: str, train: Iterable[Rating], test: Iterable[Rating]) -> Fold:
        """A fold of ``Rating`` records (small, hand-made sets: tests, examples)."""
        return cls(name, Ratings.of(train), Ratings.of(test))

    def train_by_user(self) -> dict[int, list[Rating]]:
        """Training ratings per user, oldest first (ties broken by item id)."""
        # Profiles are built from the history in the order the user lived it.
        return self.train.grouped(chronological=True).records()

    def test_by_user(self) -> dict[int, list[Rating]]:
        """Test ratings per user, sorted by item id so prompts are reproducible."""
        return self.test.grouped(chronological=False).records()


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded dataset; ``fingerprint`` is the sha256 of everything it was built from."""

    name: str
    users: Mapping[int, User]
    items: Mapping[int, Item]
    folds: Mapping[str, Fold]
    fingerprint: str
