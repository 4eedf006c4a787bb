"""MovieLens 100K as the four DataFrames of the paper's interface."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lusifer.data import Dataset, Ratings


def movielens_frames(
    dataset: Dataset, fold: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """users, items, the fold's training ratings and its test ratings, as DataFrames."""
    users = pd.DataFrame(
        [(u.user_id, u.age, u.gender, u.occupation) for u in dataset.users.values()],
        columns=["user_id", "age", "gender", "occupation"],
    )
    items = pd.DataFrame(
        [
            (
                i.item_id,
                i.title,
                None if i.year is None else str(i.year),
                "|".join(i.genres),
                i.overview,
            )
            for i in dataset.items.values()
        ],
        columns=["item_id", "title", "year", "genres", "overview"],
    )

    def ratings(rows: Ratings) -> pd.DataFrame:
        # int64 columns, as the frames of Rating records were (their digest names the input).
        return pd.DataFrame(
            {
                "user_id": rows.user_ids.astype(np.int64),
                "item_id": rows.item_ids.astype(np.int64),
                "rating": rows.ratings.astype(np.int64),
                "timestamp": rows.timestamps.astype(np.int64),
            }
        )

    split = dataset.folds[fold]
    return users, items, ratings(split.train), ratings(split.test)
