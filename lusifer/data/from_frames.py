"""A dataset made of the DataFrames a researcher holds: users, items, ratings and a test set.

The paper's interface (§2.4): the ratings are the users' history (what profiles are built
from), and a separate test frame names the (user, item) pairs to simulate, with or without
their real rating. Together they make a ``Dataset`` of one fold, planned like any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lusifer.core.errors import DataError
from lusifer.data.frames import (
    FrameColumns,
    check_known,
    duplicate_pairs,
    frame_digest,
    integer_column,
    items_from_frame,
    rating_column,
    ratings_array,
    require,
    users_from_frame,
)
from lusifer.data.model import Dataset, Fold, Item, Ratings, User

# The stored real rating of a test pair whose real rating is not known (no rating column).
UNKNOWN_RATING = 0


@dataclass(frozen=True)
class FrameData:
    """Checked users, items and history ratings; ``fingerprint`` names their content."""

    users: Mapping[int, User]
    items: Mapping[int, Item]
    history: NDArray[np.int64]  # (n, 4): user, item, rating, timestamp
    columns: FrameColumns
    fingerprint: str


def _frame(value: object, where: str) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise DataError(f"{where} is a {type(value).__name__}, not a pandas DataFrame: pass one")
    return value


def load_frames(
    ratings_df: pd.DataFrame,
    items_df: pd.DataFrame,
    users_df: pd.DataFrame | None,
    columns: FrameColumns,
    *,
    round_ratings: bool = False,
) -> FrameData:
    """Check the three frames against each other; nothing is stored or copied."""
    history = ratings_array(
        _frame(ratings_df, "ratings_df"), columns, "ratings_df", round_ratings=round_ratings
    )
    items = items_from_frame(_frame(items_df, "items_df"), columns, "items_df")
    if users_df is not None:
        users = users_from_frame(_frame(users_df, "users_df"), columns, "users_df")
    else:
        users = {u: User(u, None, None, None) for u in np.unique(history[:, 0]).tolist()}
    check_known(history, items, users, "ratings_df", columns)
    digest = hashlib.sha256(b"frames\0" + columns.model_dump_json().encode())
    for frame, used in (
        (ratings_df, [columns.user_id, columns.item_id, columns.rating, columns.timestamp]),
        (
            items_df,
            [
                columns.item_id,
                columns.title,
                columns.item_info,
                columns.year,
                columns.genres,
                columns.overview,
            ],
        ),
        (
            users_df,
            [columns.user_id, columns.age, columns.gender, columns.occupation, columns.user_info],
        ),
    ):
        digest.update(frame_digest(frame, used))
    digest.update(str(round_ratings).encode())
    return FrameData(
        users=MappingProxyType(users),
        items=MappingProxyType(items),
        history=history,
        columns=columns,
        fingerprint=digest.hexdigest(),
    )


def pairs_to_simulate(
    data: FrameData, test_df: pd.DataFrame, where: str = "test_df"
) -> NDArray[np.int64]:
    """The (n, 4) test table: user, item, real rating (0: not known), timestamp (0)."""
    frame = _frame(test_df, where)
    cols = data.columns
    require(frame, [cols.user_id, cols.item_id], where)
    users = integer_column(frame, cols.user_id, "user id", where)
    items = integer_column(frame, cols.item_id, "item id", where)
    if cols.rating in frame.columns:
        truth = rating_column(frame, cols.rating, where, round_ratings=False)
    else:
        truth = np.full(len(frame), UNKNOWN_RATING, dtype=np.int64)
    table = np.column_stack([users, items, truth, np.zeros(len(frame), dtype=np.int64)])
    first = duplicate_pairs(table)
    if first is not None:
        raise DataError(
            f"{where} row {frame.index[first]!r}: the pair user {table[first, 0]}, item "
            f"{table[first, 1]} appears twice: keep one row per (user, item) pair"
        )
    check_known(table, data.items, data.users, where, cols)
    seen = pd.MultiIndex.from_arrays([data.history[:, 0], data.history[:, 1]])
    overlap = pd.MultiIndex.from_arrays([table[:, 0], table[:, 1]]).isin(seen)
    if overlap.any():
        position = int(np.flatnonzero(overlap)[0])
        raise DataError(
            f"{where} row {frame.index[position]!r}: user {table[position, 0]} already rated "
            f"item {table[position, 1]} in ratings_df: a test pair must be new to the user; "
            "drop it from one of the two"
        )
    no_history = ~np.isin(table[:, 0], data.history[:, 0])
    if no_history.any():
        lonely = np.unique(table[no_history, 0])[:10].tolist()
        raise DataError(
            f"{where} names users with no rating in ratings_df (e.g. {lonely}): a profile is "
            "built from a user's history; add their ratings or drop those rows"
        )
    return table


def fold_dataset(
    data: FrameData,
    test: NDArray[np.int64],
    *,
    fold: str,
    name: str = "dataframes",
    users: Sequence[int] | None = None,
) -> Dataset:
    """A one-fold Dataset: the history trains, ``test`` is to be simulated.

    Only the history of ``users`` (default: the users under test) is kept, since planning
    reads no more.
    """
    wanted = np.unique(test[:, 0]) if users is None else np.asarray(list(users), dtype=np.int64)
    keep = np.isin(data.history[:, 0], wanted)
    train = Ratings.from_table(data.history[keep])
    return Dataset(
        name=name,
        users=data.users,
        items=data.items,
        folds=MappingProxyType({fold: Fold(fold, train, Ratings.from_table(test))}),
        fingerprint=data.fingerprint,
    )
