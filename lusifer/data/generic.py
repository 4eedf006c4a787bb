"""Any ratings/items/users CSV (or Parquet) triple as a Dataset, with seeded k-fold splits.

pandas reads the files and ``lusifer.data.frames`` checks whole columns at once; the
line-by-line reader below stays as the diagnosis that names the file, line and fix of the
first bad row when a check fails.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lusifer.core.columns import ColumnMapping
from lusifer.core.errors import ConfigurationError, DataError
from lusifer.data.csv_lines import diagnose, read_hashed, read_table
from lusifer.data.frames import (
    FrameColumns,
    check_known,
    items_from_frame,
    ratings_array,
    users_from_frame,
)
from lusifer.data.model import Dataset, Fold, Ratings, User


def _k_folds(table: NDArray[np.int64], n_folds: int, seed: int) -> dict[str, Fold]:
    # Shuffle once, cut into k near-equal parts; each part is the test set of one fold.
    # Each split keeps the file's order, whatever the shuffle. The folds are views of one set
    # of columns: 17 bytes a rating once, then 4 a rating in each split.
    ratings = Ratings.from_table(table)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(table)), n_folds)
    folds: dict[str, Fold] = {}
    for k, part in enumerate(parts):
        in_test = np.zeros(len(table), dtype=bool)
        in_test[part] = True
        name = f"f{k + 1}"
        folds[name] = Fold(name, ratings.view(~in_test), ratings.view(in_test))
    return folds


class _Unreadable(Exception):
    """pandas could not parse a file; the line-by-line reader says where and why."""


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _read_frame(
    path: Path, encoding: str, delimiter: str, hasher: hashlib._Hash, *, text: bool
) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (``text``: every cell a string, for small tables)."""
    data = read_hashed(path, hasher)
    if _is_parquet(path):
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as err:  # pyarrow raises many kinds; all mean "not this format"
            reason = " ".join(str(err).split())[:200]
            raise DataError(
                f"{path} is not a readable Parquet file ({reason}): pass a Parquet or CSV file"
            ) from None
    else:
        utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        try:
            with warnings.catch_warnings():
                # A column typed differently in two chunks comes out as objects, which the
                # column checks convert and name; the warning would only add a second line.
                warnings.simplefilter("ignore", pd.errors.DtypeWarning)
                frame = pd.read_csv(
                    io.BytesIO(data),
                    sep=delimiter,
                    # A byte-order mark from spreadsheet exports would stick to the first column.
                    encoding="utf-8-sig" if utf8 else encoding,
                    dtype=str if text else None,
                    keep_default_na=not text,
                    na_filter=not text,
                    engine="c",
                    # Ratings are parsed in chunks: a 5 M-line file peaks at +0.2 GB, not +0.5.
                    low_memory=not text,
                )
        except (ValueError, LookupError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise _Unreadable from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if text and not _is_parquet(path):
        # pandas gives a row with too few fields empty cells; the line reader refuses it, as
        # the loader always has. Item and user tables are small: a second read costs little.
        read_table(path, encoding, delimiter, hashlib.sha256())
    if text:
        frame = frame[frame.apply(lambda col: col.str.strip() != "").any(axis=1)]
    return frame


def load_csv_dataset(
    ratings_csv: Path,
    items_csv: Path,
    users_csv: Path | None = None,
    *,
    columns: ColumnMapping,
    n_folds: int = 5,
    seed: int = 0,
    name: str = "custom",
    round_ratings: bool = False,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Dataset:
    """Load ratings, items and (optionally) users tables into a Dataset with k seeded folds.

    Each file is a CSV, or Parquet when its name ends in ``.parquet``. pandas reads them and
    the checks run on whole columns; when one fails on a CSV, the line-by-line reader of
    before names the file, line and fix.
    """
    if n_folds < 2:
        raise ConfigurationError(f"n_folds is {n_folds}: use at least 2 folds (5 gives 80/20)")
    hasher = hashlib.sha256()
    args = (encoding, delimiter, hasher)
    mapping = FrameColumns(**columns.model_dump())
    try:
        table = ratings_array(
            _read_frame(ratings_csv, *args, text=False),
            columns,
            str(ratings_csv),
            round_ratings=round_ratings,
        )
        items = items_from_frame(_read_frame(items_csv, *args, text=True), mapping, str(items_csv))
        if users_csv is not None:
            users_df = _read_frame(users_csv, *args, text=True)
            users = users_from_frame(users_df, mapping, str(users_csv))
        else:
            # Without a users file, users exist only as ids and get no demographic text.
            users = {u: User(u, None, None, None) for u in np.unique(table[:, 0]).tolist()}
        check_known(
            table,
            items,
            users,
            str(ratings_csv),
            columns,
            items_where=str(items_csv),
            users_where=str(users_csv),
        )
    except (DataError, _Unreadable) as err:
        paths = (ratings_csv, items_csv, users_csv)
        if not any(p is not None and _is_parquet(p) for p in paths):
            diagnose(paths, columns, round_ratings, encoding, delimiter)
        if isinstance(err, DataError):
            raise
        raise DataError(f"{ratings_csv} cannot be parsed as CSV: check the delimiter") from None
    if len(table) < n_folds:
        problem = f"{ratings_csv} has {len(table)} ratings, fewer than {n_folds} folds"
        raise DataError(f"{problem}: lower n_folds or add ratings")
    # The split depends on these settings, so they are part of what the fingerprint names.
    settings = f"{columns.model_dump_json()}|{n_folds}|{seed}|{round_ratings}|{delimiter}"
    hasher.update(settings.encode())
    return Dataset(
        name=name,
        users=MappingProxyType(users),
        items=MappingProxyType(items),
        folds=MappingProxyType(_k_folds(table, n_folds, seed)),
        fingerprint=hasher.hexdigest(),
    )
