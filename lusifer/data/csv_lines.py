"""The line-by-line reader of CSV datasets: it names the file, line and fix of a bad row.

The loader (``lusifer.data.generic``) reads with pandas and checks whole columns; when a check
fails, this reader, the loader of before pandas, runs over the same files to say exactly where.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lusifer.core.columns import ColumnMapping
from lusifer.core.errors import DataError
from lusifer.data.model import INT32_LIMIT, Item, User
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


def read_hashed(path: Path, hasher: hashlib._Hash) -> bytes:
    """The bytes of a data file, fed to the dataset's fingerprint; a missing or unreadable
    file is one line."""
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
    return data


def read_table(path: Path, encoding: str, delimiter: str, hasher: hashlib._Hash) -> _Table:
    data = read_hashed(path, hasher)
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


def diagnose(
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
        read_table(ratings_csv, encoding, delimiter, hasher), columns, round_ratings
    )
    items = _parse_items(read_table(items_csv, encoding, delimiter, hasher), columns)
    if users_csv is not None:
        users = _parse_users(read_table(users_csv, encoding, delimiter, hasher), columns)
    else:
        users = {u: User(u, None, None, None) for u, *_ in rating_rows}
    for user_id, item_id, _, _ in rating_rows:
        if item_id not in items:
            raise DataError(f"{ratings_csv}: item {item_id} is not in {items_csv}: add it there")
        if user_id not in users:
            raise DataError(f"{ratings_csv}: user {user_id} is not in {users_csv}: add it there")
