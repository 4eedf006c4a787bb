"""Any ratings/items/users CSV (or Parquet) triple as a Dataset, with seeded k-fold splits.

pandas reads the files and ``lusifer.data.frames`` checks whole columns at once; the
line-by-line reader below stays as the diagnosis that names the file, line and fix of the
first bad row when a check fails.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from lusifer.core.columns import ColumnMapping
from lusifer.core.errors import ConfigurationError, DataError
from lusifer.data.frames import (
    FrameColumns,
    check_known,
    items_from_frame,
    ratings_array,
    users_from_frame,
)
from lusifer.data.model import INT32_LIMIT, Dataset, Fold, Item, Rating, User
from lusifer.data.movielens import split_title_year

_LEADING_YEAR = re.compile(r"^\s*(\d{4})")


@dataclass(frozen=True, slots=True)
class _Table:
    """One CSV file: its path, header, and data rows with their line numbers."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def require(self, wanted: list[str | None]) -> list[int]:
        """Indices of the wanted columns (None entries map to -1); missing ones are an error."""
        missing = [c for c in wanted if c is not None and c not in self.header]
        if missing:
            raise DataError(
                f"{self.path} lacks column(s) {', '.join(missing)} (found: "
                f"{', '.join(self.header) or 'none'}): map our fields to the CSV's columns "
                "(--columns user_id=...,item_id=... or a ColumnMapping)"
            )
        return [-1 if c is None else self.header.index(c) for c in wanted]

    def error(self, line: int, problem: str) -> DataError:
        """A DataError naming this file and line."""
        return DataError(f"{self.path} line {line}: {problem}: fix the file or the ColumnMapping")


def _read_table(path: Path, encoding: str, delimiter: str, hasher: hashlib._Hash) -> _Table:
    if not path.exists():
        raise DataError(f"{path} not found: pass the path of an existing CSV file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(
            f"cannot read {path} ({err.strerror or err}): pass a CSV file you may read"
        ) from None
    hasher.update(f"{path.name}\0{len(data)}\0".encode())
    hasher.update(data)
    try:
        # A byte-order mark from spreadsheet exports would otherwise stick to the first column.
        utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        text = data.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as err:
        problem = f"{path} is not valid {encoding} (byte {data[err.start]:#04x} at {err.start})"
        raise DataError(f"{problem}: pass encoding='latin-1' or the file's real encoding") from None
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}: pass a Python codec name") from None
    # newline="" lets the csv module keep line breaks inside quoted fields.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    rows: list[tuple[int, list[str]]] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            where = f"{path} line {reader.line_num}"
            raise DataError(
                f"{where}: {len(row)} fields but the header has {len(header)}: quote fields "
                f"that contain {delimiter!r} or pass the right delimiter"
            )
        rows.append((reader.line_num, row))
    return _Table(path, header, rows)


def _integer(table: _Table, line: int, value: str, what: str, *, int32: bool = True) -> int:
    try:
        number = float(value)
    except ValueError:
        raise table.error(line, f"{what} {value!r} is not a number") from None
    if not number.is_integer():
        raise table.error(line, f"{what} {value!r} is not an integer")
    if int32 and not -INT32_LIMIT <= number < INT32_LIMIT:
        raise table.error(line, f"{what} {value} does not fit the database's 32-bit integers")
    return int(number)


def _rating(table: _Table, line: int, value: str, round_ratings: bool) -> int:
    try:
        number = float(value)
    except ValueError:
        raise table.error(line, f"rating {value!r} is not a number") from None
    if not math.isfinite(number):
        raise table.error(line, f"rating {value!r} is not a finite number")
    if number.is_integer() and 1 <= number <= 5:
        return int(number)
    if not round_ratings:
        raise table.error(
            line,
            f"rating {value} is not an integer in 1..5: round the file's ratings, or load it "
            "with load_csv_dataset(..., round_ratings=True)",
        )
    # Round half up (3.5 -> 4), as star ratings are read, then clip into the 1..5 scale.
    return min(5, max(1, math.floor(number + 0.5)))


def _parse_ratings(
    table: _Table, columns: ColumnMapping, round_ratings: bool
) -> list[tuple[int, int, int, int]]:
    cols = table.require([columns.user_id, columns.item_id, columns.rating, columns.timestamp])
    seen: set[tuple[int, int]] = set()
    ratings: list[tuple[int, int, int, int]] = []
    for position, (line, row) in enumerate(table.rows):
        user_id = _integer(table, line, row[cols[0]], "user id")
        item_id = _integer(table, line, row[cols[1]], "item id")
        value = _rating(table, line, row[cols[2]], round_ratings)
        stamp = (
            position
            if cols[3] < 0
            else _integer(table, line, row[cols[3]], "timestamp", int32=False)
        )
        if (user_id, item_id) in seen:
            raise table.error(line, f"user {user_id} rates item {item_id} twice")
        seen.add((user_id, item_id))
        ratings.append((user_id, item_id, value, stamp))
    return ratings


def _text(row: list[str], col: int) -> str | None:
    return (" ".join(row[col].split()) or None) if col >= 0 else None


def _parse_items(table: _Table, columns: ColumnMapping) -> dict[int, Item]:
    wanted = [columns.item_id, columns.title, columns.year, columns.genres, columns.overview]
    id_col, title_col, year_col, genres_col, overview_col = table.require(wanted)
    items: dict[int, Item] = {}
    for line, row in table.rows:
        item_id = _integer(table, line, row[id_col], "item id")
        if item_id in items:
            raise table.error(line, f"item id {item_id} appears twice")
        title, year = split_title_year(row[title_col])
        if not title:
            raise table.error(line, f"item {item_id} has an empty title")
        if year_col >= 0 and row[year_col].strip():
            match = _LEADING_YEAR.match(row[year_col])
            if match is None:
                raise table.error(line, f"year {row[year_col]!r} does not start with 4 digits")
            year = int(match[1])
        sep = columns.genres_separator
        raw_genres = row[genres_col].split(sep) if genres_col >= 0 else []
        genres = tuple(g for g in (" ".join(x.split()) for x in raw_genres) if g)
        items[item_id] = Item(item_id, title, year, genres, _text(row, overview_col))
    return items


def _parse_users(table: _Table, columns: ColumnMapping) -> dict[int, User]:
    wanted = [columns.user_id, columns.age, columns.gender, columns.occupation]
    id_col, age_col, gender_col, occupation_col = table.require(wanted)
    users: dict[int, User] = {}
    for line, row in table.rows:
        user_id = _integer(table, line, row[id_col], "user id")
        if user_id in users:
            raise table.error(line, f"user id {user_id} appears twice")
        age_text = row[age_col].strip() if age_col >= 0 else ""
        age = _integer(table, line, age_text, "age") if age_text else None
        users[user_id] = User(user_id, age, _text(row, gender_col), _text(row, occupation_col))
    return users


def _k_folds(table: NDArray[np.int64], n_folds: int, seed: int) -> dict[str, Fold]:
    # Shuffle once, cut into k near-equal parts; each part is the test set of one fold.
    # Indices are re-sorted so each split keeps the file's order, whatever the shuffle.
    ratings = np.empty(len(table), dtype=object)
    ratings[:] = [Rating(*row) for row in table.tolist()]  # one object per rating, shared
    parts = np.array_split(np.random.default_rng(seed).permutation(len(table)), n_folds)
    folds: dict[str, Fold] = {}
    for k, part in enumerate(parts):
        in_test = np.zeros(len(table), dtype=bool)
        in_test[part] = True
        train = tuple(ratings[~in_test].tolist())
        test = tuple(ratings[np.sort(part)].tolist())
        folds[f"f{k + 1}"] = Fold(f"f{k + 1}", train, test)
    return folds


class _Unreadable(Exception):
    """pandas could not parse a file; the line-by-line reader says where and why."""


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _read_frame(
    path: Path, encoding: str, delimiter: str, hasher: hashlib._Hash, *, text: bool
) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (``text``: every cell a string, for small tables)."""
    if not path.exists():
        raise DataError(f"{path} not found: pass the path of an existing CSV file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(
            f"cannot read {path} ({err.strerror or err}): pass a CSV file you may read"
        ) from None
    hasher.update(f"{path.name}\0{len(data)}\0".encode())
    hasher.update(data)
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
            frame = pd.read_csv(
                io.BytesIO(data),
                sep=delimiter,
                # A byte-order mark from spreadsheet exports would stick to the first column.
                encoding="utf-8-sig" if utf8 else encoding,
                dtype=str if text else None,
                keep_default_na=not text,
                na_filter=not text,
                engine="c",
                low_memory=False,
            )
        except (ValueError, LookupError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise _Unreadable from None
    frame.columns = [str(c).strip() for c in frame.columns]
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
            _diagnose(paths, columns, round_ratings, encoding, delimiter)
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


def _diagnose(
    paths: tuple[Path, Path, Path | None],
    columns: ColumnMapping,
    round_ratings: bool,
    encoding: str,
    delimiter: str,
) -> None:
    """Read the files line by line, as before pandas, raising the error that names the line."""
    ratings_csv, items_csv, users_csv = paths
    hasher = hashlib.sha256()
    rating_rows = _parse_ratings(
        _read_table(ratings_csv, encoding, delimiter, hasher), columns, round_ratings
    )
    items = _parse_items(_read_table(items_csv, encoding, delimiter, hasher), columns)
    if users_csv is not None:
        users = _parse_users(_read_table(users_csv, encoding, delimiter, hasher), columns)
    else:
        users = {u: User(u, None, None, None) for u, *_ in rating_rows}
    for user_id, item_id, _, _ in rating_rows:
        if item_id not in items:
            raise DataError(f"{ratings_csv}: item {item_id} is not in {items_csv}: add it there")
        if user_id not in users:
            raise DataError(f"{ratings_csv}: user {user_id} is not in {users_csv}: add it there")
