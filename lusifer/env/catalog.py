"""The items an agent can recommend, their numeric features, and the users' training histories.

An action names items by *index* (0..n_items-1, items in id order); ``Catalog`` maps indices to
dataset ids and gives each item a feature vector: the release year scaled to [0, 1] (0.5 when
unknown) followed by a multi-hot of the dataset's genres.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lusifer.core.errors import DataError
from lusifer.data import Dataset


@dataclass(frozen=True)
class Catalog:
    """Item indices, item features and chronological training histories of one fold."""

    item_ids: tuple[int, ...]
    index_of: Mapping[int, int]
    genres: tuple[str, ...]
    features: NDArray[np.float32]  # (n_items, 1 + n_genres): year, genre multi-hot
    histories: Mapping[int, tuple[tuple[int, int], ...]]  # user -> ((item, rating), ...)
    users: tuple[int, ...]  # users with training ratings, sorted

    @property
    def n_items(self) -> int:
        """Number of items an action can name."""
        return len(self.item_ids)

    @property
    def n_features(self) -> int:
        """Length of an item's feature vector."""
        return int(self.features.shape[1])

    @classmethod
    def from_dataset(cls, dataset: Dataset, fold: str) -> Catalog:
        """Index a dataset's items and the training histories of ``fold``."""
        if fold not in dataset.folds:
            raise DataError(
                f"unknown fold {fold!r}; choose from {', '.join(sorted(dataset.folds))}"
            )
        item_ids = tuple(sorted(dataset.items))
        if not item_ids:
            raise DataError(f"dataset {dataset.name!r} has no items to recommend")
        genres = tuple(sorted({g for item in dataset.items.values() for g in item.genres}))
        years = [dataset.items[i].year for i in item_ids]
        known = [y for y in years if y is not None]
        low, high = (min(known), max(known)) if known else (0, 0)
        span = max(1, high - low)
        features = np.zeros((len(item_ids), 1 + len(genres)), dtype=np.float32)
        genre_col = {g: 1 + n for n, g in enumerate(genres)}
        for row, item_id in enumerate(item_ids):
            year = years[row]
            features[row, 0] = 0.5 if year is None else (year - low) / span
            for genre in dataset.items[item_id].genres:
                features[row, genre_col[genre]] = 1.0
        histories = {
            user: tuple((r.item_id, r.rating) for r in ratings if r.item_id in dataset.items)
            for user, ratings in dataset.folds[fold].train_by_user().items()
        }
        histories = {u: h for u, h in histories.items() if h and u in dataset.users}
        return cls(
            item_ids=item_ids,
            index_of={item_id: n for n, item_id in enumerate(item_ids)},
            genres=genres,
            features=features,
            histories=histories,
            users=tuple(sorted(histories)),
        )

    def rated_mask(self, user_id: int) -> NDArray[np.bool_]:
        """True for the items the user rated in training (they are never recommended)."""
        mask = np.zeros(self.n_items, dtype=np.bool_)
        for item_id, _ in self.histories[user_id]:
            mask[self.index_of[item_id]] = True
        return mask
