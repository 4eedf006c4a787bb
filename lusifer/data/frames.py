"""pandas DataFrames of ratings, items and users, checked and turned into Lusifer's records.

The one place where tables from outside are validated column by column: the DataFrame API
takes them as they are, and the CSV/Parquet loader reads files into them first. Every check is
vectorised; the first bad row is named by its index label and column, with the fix. Ratings
leave as one (n, 4) int64 array (user, item, rating, timestamp), never a list of strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lusifer.core.columns import ColumnMapping
from lusifer.core.errors import DataError
from lusifer.data.model import INT32_LIMIT, Item, User
from lusifer.data.movielens import split_title_year

_LEADING_YEAR = re.compile(r"^\s*(\d{4})")
MAP_FIX = "map our fields to its columns (columns={'user_id': ..., 'item_id': ...} or --columns)"


class FrameColumns(ColumnMapping):
    """A ``ColumnMapping`` plus the reference code's ready-made text columns.

    ``user_info`` / ``item_info`` name columns that already hold the one-line description of
    a user / an item (the paper's ``user_info`` and ``movie_info``); when set they are used as
    they are instead of texts built from age, gender, title, genres, ...
    """

    user_info: str | None = None
    item_info: str | None = None


def require(df: pd.DataFrame, wanted: list[str | None], where: str) -> None:
    """Fail naming every mapped column that ``df`` lacks, and the columns it has."""
    missing = [c for c in wanted if c is not None and c not in df.columns]
    if missing:
        found = ", ".join(str(c) for c in df.columns) or "none"
        raise DataError(f"{where} lacks column(s) {', '.join(missing)} (found: {found}): {MAP_FIX}")


def shown(value: object) -> str:
    """A cell as users wrote it: numpy scalars as plain Python values."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)


def _first_bad(df: pd.DataFrame, bad: NDArray[np.bool_]) -> tuple[int, Any]:
    position = int(np.flatnonzero(bad)[0])
    return position, df.index[position]


def _as_float(series: pd.Series) -> NDArray[np.float64]:
    numbers = pd.to_numeric(series, errors="coerce")
    return np.asarray(numbers.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)


def integer_column(
    df: pd.DataFrame, column: str, what: str, where: str, *, int32: bool = True
) -> NDArray[np.int64]:
    """The column as int64; a missing, fractional or (for ids) 32-bit-overflowing value fails."""
    series = df[column]
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        # Exact for any int64 (timestamps in nanoseconds would not survive a float).
        values = np.asarray(series.to_numpy(dtype="int64"), dtype=np.int64)
        bad = ((values < -INT32_LIMIT) | (values >= INT32_LIMIT)) if int32 else None
        if bad is not None and bad.any():
            _, label = _first_bad(df, bad)
            raise DataError(
                f"{where} row {label!r} column {column!r}: {what} {series.loc[label]} does not "
                "fit the database's 32-bit integers: renumber the ids"
            )
        return values
    numbers = _as_float(series)
    bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
    if int32:
        bad |= (numbers < -INT32_LIMIT) | (numbers >= INT32_LIMIT)
    if bad.any():
        position, label = _first_bad(df, bad)
        raise DataError(
            f"{where} row {label!r} column {column!r}: {what} {shown(series.iloc[position])} "
            f"is not an integer{' of 32 bits' if int32 else ''}: fix the column or map {what} to "
            "another one"
        )
    return numbers.astype(np.int64)


def rating_column(
    df: pd.DataFrame, column: str, where: str, *, round_ratings: bool
) -> NDArray[np.int64]:
    """Ratings on the 1..5 scale; others fail, or are rounded half up and clipped when asked."""
    numbers = _as_float(df[column])
    bad = ~np.isfinite(numbers)
    if not bad.any():
        whole = (numbers == np.floor(numbers)) & (numbers >= 1) & (numbers <= 5)
        if whole.all():
            return numbers.astype(np.int64)
        if round_ratings:
            return np.clip(np.floor(numbers + 0.5), 1, 5).astype(np.int64)
        bad = ~whole
    position, label = _first_bad(df, bad)
    raise DataError(
        f"{where} row {label!r} column {column!r}: rating {shown(df[column].iloc[position])} "
        "is not an integer in 1..5: rescale the ratings to 1..5, or pass round_ratings=True"
    )


def ratings_array(
    df: pd.DataFrame, columns: ColumnMapping, where: str, *, round_ratings: bool = False
) -> NDArray[np.int64]:
    """Checked (n, 4) array of user, item, rating, timestamp (row order without a timestamp)."""
    require(df, [columns.user_id, columns.item_id, columns.rating, columns.timestamp], where)
    users = integer_column(df, columns.user_id, "user id", where)
    items = integer_column(df, columns.item_id, "item id", where)
    values = rating_column(df, columns.rating, where, round_ratings=round_ratings)
    if columns.timestamp is None:
        stamps = np.arange(len(df), dtype=np.int64)
    else:
        stamps = integer_column(df, columns.timestamp, "timestamp", where, int32=False)
    table = np.column_stack([users, items, values, stamps]).astype(np.int64, copy=False)
    first_dup = duplicate_pairs(table)
    if first_dup is not None:
        label = df.index[first_dup]
        user, item = int(table[first_dup, 0]), int(table[first_dup, 1])
        raise DataError(
            f"{where} row {label!r}: user {user} rates item {item} twice (columns "
            f"{columns.user_id!r}, {columns.item_id!r}): keep one rating per pair, e.g. "
            f"drop_duplicates([{columns.user_id!r}, {columns.item_id!r}], keep='last')"
        )
    return table


def duplicate_pairs(table: NDArray[np.int64]) -> int | None:
    """Position of the first row whose (user, item) pair an earlier row already has.

    The ids fit 32 bits (checked where they are read), so a pair is one int64 key; a stable
    sort of the keys needs a third of the memory of a MultiIndex's hash table.
    """
    if len(table) == 0:
        return None
    keys = table[:, 0] * 2**32 + (table[:, 1] + INT32_LIMIT)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    # Equal keys keep their row order: every row after the first of its run is a repeat.
    repeats = order[1:][ordered[1:] == ordered[:-1]]
    return int(repeats.min()) if len(repeats) else None


def _texts(df: pd.DataFrame, column: str | None) -> list[str | None]:
    if column is None:
        return [None] * len(df)
    return [
        None if _missing(v) else (" ".join(str(v).split()) or None) for v in df[column].tolist()
    ]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _unique_ids(df: pd.DataFrame, column: str, what: str, where: str) -> NDArray[np.int64]:
    ids = integer_column(df, column, f"{what} id", where)
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        position, label = _first_bad(df, np.asarray(duplicated))
        raise DataError(
            f"{where} row {label!r} column {column!r}: {what} id {ids[position]} appears "
            "twice: keep one row per id"
        )
    return ids


def items_from_frame(df: pd.DataFrame, columns: FrameColumns, where: str) -> dict[int, Item]:
    """Items by id: title (with a "(1995)" year suffix), year, genres, overview or item_info."""
    text = columns.item_info
    title_col = None if text is not None and columns.title not in df.columns else columns.title
    wanted = [columns.item_id, title_col, text, columns.year, columns.genres, columns.overview]
    require(df, wanted, where)
    ids = _unique_ids(df, columns.item_id, "item", where)
    # A ready-made item_info travels as the title: the prompts show it after "Title:".
    titles = _texts(df, text if text is not None else title_col)
    years = _texts(df, columns.year)
    genres = _texts(df, columns.genres)
    overviews = _texts(df, columns.overview)
    items: dict[int, Item] = {}
    for n, item_id in enumerate(ids.tolist()):
        title, year = split_title_year(titles[n] or "") if text is None else (titles[n], None)
        if not title:
            raise DataError(
                f"{where} row {df.index[n]!r}: item {item_id} has an empty title: give every "
                "item a title (or an item_info text)"
            )
        if years[n]:
            match = _LEADING_YEAR.match(years[n] or "")
            if match is None:
                raise DataError(
                    f"{where} row {df.index[n]!r} column {columns.year!r}: year {years[n]!r} "
                    "does not start with 4 digits: fix the column or leave it empty"
                )
            year = int(match[1])
        parts = (genres[n] or "").split(columns.genres_separator)
        chosen = tuple(g for g in (" ".join(x.split()) for x in parts) if g)
        items[item_id] = Item(item_id, title, year, chosen, overviews[n])
    return items


def users_from_frame(df: pd.DataFrame, columns: FrameColumns, where: str) -> dict[int, User]:
    """Users by id with their demographics, or a ready-made ``user_info`` text."""
    wanted = [columns.user_id, columns.age, columns.gender, columns.occupation, columns.user_info]
    require(df, wanted, where)
    ids = _unique_ids(df, columns.user_id, "user", where)
    ages: list[int | None] = [None] * len(df)
    if columns.age is not None:
        known = df[columns.age].notna().to_numpy() & (df[columns.age].astype(str).str.strip() != "")
        if known.any():
            checked = integer_column(df[known], columns.age, "age", where)
            for position, age in zip(np.flatnonzero(known).tolist(), checked.tolist(), strict=True):
                ages[position] = age
    genders, jobs = _texts(df, columns.gender), _texts(df, columns.occupation)
    infos = _texts(df, columns.user_info)
    return {
        user_id: User(user_id, ages[n], genders[n], jobs[n], infos[n])
        for n, user_id in enumerate(ids.tolist())
    }


def check_known(
    table: NDArray[np.int64],
    items: Mapping[int, Item],
    users: Mapping[int, User],
    where: str,
    columns: ColumnMapping,
    *,
    items_where: str = "items_df",
    users_where: str = "users_df",
) -> None:
    """Fail when a rating names an item or user that the item or user table lacks."""
    for position, known, name, column, other in (
        (1, items, "item", columns.item_id, items_where),
        (0, users, "user", columns.user_id, users_where),
    ):
        ids = np.fromiter(known.keys(), dtype=np.int64, count=len(known))
        unknown = ~np.isin(table[:, position], ids)
        if unknown.any():
            missing = np.unique(table[unknown, position])[:10].tolist()
            raise DataError(
                f"{where} column {column!r} holds {name} ids not in {other} (e.g. {missing}): "
                f"add them to {other} or drop those rows"
            )


def frame_digest(df: pd.DataFrame | None, columns: list[str | None]) -> bytes:
    """A digest of the used columns of a frame (its content, not its memory layout)."""
    if df is None:
        return b"none"
    used = [c for c in dict.fromkeys(columns) if c is not None and c in df.columns]
    hashed = pd.util.hash_pandas_object(df[used], index=False).to_numpy()
    return hashlib.sha256(
        f"{used}\0{len(df)}\0".encode() + np.ascontiguousarray(hashed).tobytes()
    ).digest()
