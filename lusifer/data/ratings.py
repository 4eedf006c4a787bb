"""Ratings as four aligned numpy columns: 17 bytes a rating instead of a Python object each.

A ``Rating`` object and its tuple slots cost about 0.1 KB; a 5 M-rating dataset in five folds
held 5 M of them in 25 M slots. ``Ratings`` keeps the columns (ids in int32, which the loaders
enforce; stars in int8; timestamps in int64) and still reads as a sequence of ``Rating`` for
the small consumers (baselines, the RL environment, tests); large ones use the columns, and
``grouped`` gives each user's rows in one sort instead of a dict of lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, slots=True)
class Rating:
    """One explicit rating on the 1..5 scale; ``timestamp`` is seconds since the epoch."""

    user_id: int
    item_id: int
    rating: int
    timestamp: int


def _frozen(values: ArrayLike, dtype: type[np.generic]) -> NDArray[Any]:
    # Contiguous: a column cut from an (n, 4) table would otherwise keep the whole table alive.
    # Read-only through a view of its own, as the tuples of before were, without touching an
    # array the caller passed in.
    array = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=dtype).view()
    array.flags.writeable = False
    return array


class Ratings(Sequence[Rating]):
    """Ratings in four aligned columns, in the order they were given.

    A ``view`` names rows of another ``Ratings`` without copying them (4 bytes a rating): the
    k folds of a dataset share its one set of columns, and each column of a view is gathered
    when it is read, so read it once and keep it.
    """

    __slots__ = ("_base", "_rows")

    def __init__(
        self, user_ids: ArrayLike, item_ids: ArrayLike, ratings: ArrayLike, timestamps: ArrayLike
    ) -> None:
        base = (
            _frozen(user_ids, np.int32),
            _frozen(item_ids, np.int32),
            _frozen(ratings, np.int8),
            _frozen(timestamps, np.int64),
        )
        sizes = {len(column) for column in base}
        if len(sizes) != 1:
            raise ValueError(f"rating columns of different lengths {sorted(sizes)}")
        self._base: tuple[NDArray[Any], ...] = base
        self._rows: NDArray[np.intp] | None = None

    @classmethod
    def from_table(cls, table: NDArray[np.integer[Any]]) -> Ratings:
        """Ratings of an (n, 4) table of user, item, rating, timestamp."""
        rows = table.reshape(-1, 4)
        return cls(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])

    @classmethod
    def of(cls, records: Iterable[Rating]) -> Ratings:
        """Ratings of ``Rating`` records (small, hand-made sets: tests, examples)."""
        rows = [(r.user_id, r.item_id, r.rating, r.timestamp) for r in records]
        return cls.from_table(np.array(rows, dtype=np.int64).reshape(-1, 4))

    def view(self, rows: NDArray[np.bool_]) -> Ratings:
        """The ratings where ``rows`` is true, in order, sharing these columns."""
        found = np.flatnonzero(rows)
        if self._rows is not None:
            found = self._rows[found]
        # Positions fit 32 bits whenever the ids do; half the bytes of numpy's default.
        dtype = np.int32 if len(self._base[0]) < 2**31 else np.int64
        shared = object.__new__(Ratings)
        shared._base, shared._rows = self._base, _frozen(found, dtype)
        return shared

    def _column(self, k: int) -> NDArray[Any]:
        column = self._base[k]
        return column if self._rows is None else column[self._rows]

    @property
    def user_ids(self) -> NDArray[np.int32]:
        """The users' ids."""
        return self._column(0)

    @property
    def item_ids(self) -> NDArray[np.int32]:
        """The items' ids."""
        return self._column(1)

    @property
    def ratings(self) -> NDArray[np.int8]:
        """The stars, 1..5 (0: a test pair whose real rating is not known)."""
        return self._column(2)

    @property
    def timestamps(self) -> NDArray[np.int64]:
        """Seconds since the epoch (the row order where a dataset has none)."""
        return self._column(3)

    def __len__(self) -> int:
        return len(self._base[0] if self._rows is None else self._rows)

    @overload
    def __getitem__(self, index: int) -> Rating: ...

    @overload
    def __getitem__(self, index: slice) -> Ratings: ...

    def __getitem__(self, index: int | slice) -> Rating | Ratings:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        k = range(len(self))[index]  # negative indices and IndexError, as a tuple
        at = k if self._rows is None else int(self._rows[k])
        return Rating(*(int(column[at]) for column in self._base))

    def __iter__(self) -> Iterator[Rating]:
        columns = (self.user_ids, self.item_ids, self.ratings, self.timestamps)
        return (Rating(*row) for row in zip(*(c.tolist() for c in columns), strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ratings):
            return NotImplemented
        return len(self) == len(other) and all(
            np.array_equal(self._column(k), other._column(k)) for k in range(4)
        )

    __hash__ = None  # type: ignore[assignment]  # equal by content, and mutable-looking arrays

    def __repr__(self) -> str:
        return f"Ratings({len(self)} ratings)"

    def take(self, rows: NDArray[np.integer[Any]] | NDArray[np.bool_]) -> Ratings:
        """The ratings at ``rows`` (indices or a mask), in that order, in columns of their own."""
        at = rows if self._rows is None else self._rows[rows]
        return Ratings(*(column[at] for column in self._base))

    def of_users(self, users: ArrayLike) -> Ratings:
        """The ratings of ``users`` only, in the same order."""
        return self.take(np.isin(self.user_ids, np.asarray(users, dtype=np.int64)))

    def positions(self, users: ArrayLike, items: ArrayLike) -> NDArray[np.int64]:
        """Index of each (user, item) pair among these ratings; -1 where it is not one."""
        import pandas as pd  # here only: the workers and most commands never need pandas

        here = pd.MultiIndex.from_arrays([self.user_ids, self.item_ids])
        asked = pd.MultiIndex.from_arrays(
            [np.asarray(users, dtype=np.int32), np.asarray(items, dtype=np.int32)]
        )
        return np.asarray(here.get_indexer(asked), dtype=np.int64)

    def grouped(self, *, chronological: bool) -> UserGroups:
        """Each user's ratings, users ascending: oldest first (ties by item id) when
        ``chronological``, the order profiles read a history in; else by item id, the
        order test items are asked in."""
        keys = (self.item_ids, self.timestamps) if chronological else (self.item_ids,)
        # lexsort is stable and sorts by its last key first: user, then (timestamp,) item.
        ordered = self.take(np.lexsort((*keys, self.user_ids)))
        users, starts = np.unique(ordered.user_ids, return_index=True)
        return UserGroups(ordered, users, np.append(starts, len(ordered)))


@dataclass(frozen=True, slots=True)
class UserGroups:
    """Ratings sorted by user: user ``users[k]``'s rows are ``bounds[k]:bounds[k + 1]``."""

    ratings: Ratings
    users: NDArray[np.int32]
    bounds: NDArray[np.intp]

    def index(self, user_id: int) -> int | None:
        """Position of a user in ``users``; None when the user has no rating here."""
        k = int(np.searchsorted(self.users, user_id))
        return k if k < len(self.users) and int(self.users[k]) == user_id else None

    def pairs(self, k: int) -> list[tuple[int, int]]:
        """(item, rating) of the ``k``-th user, in the group's order."""
        start, end = int(self.bounds[k]), int(self.bounds[k + 1])
        items = self.ratings.item_ids[start:end].tolist()
        return list(zip(items, self.ratings.ratings[start:end].tolist(), strict=True))

    def records(self) -> dict[int, list[Rating]]:
        """Every user's ratings as ``Rating`` records (small datasets, the RL environment)."""
        every = list(self.ratings)
        bounds = self.bounds.tolist()
        return {
            user: every[bounds[k] : bounds[k + 1]] for k, user in enumerate(self.users.tolist())
        }
