"""MovieLens 100K as the four DataFrames of the paper's interface."""

from __future__ import annotations

import pandas as pd

from lusifer.data import Dataset, Rating


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
    columns = ["user_id", "item_id", "rating", "timestamp"]

    def ratings(rows: tuple[Rating, ...]) -> pd.DataFrame:
        return pd.DataFrame(
            [(r.user_id, r.item_id, r.rating, r.timestamp) for r in rows],
            columns=columns,
        )

    split = dataset.folds[fold]
    return users, items, ratings(split.train), ratings(split.test)
