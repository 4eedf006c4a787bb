"""MovieLens 100K: load the original GroupLens files (and TMDB overviews), or download them."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from lusifer.core.config import MOVIELENS_FOLDS
from lusifer.core.errors import DataError
from lusifer.data.download import ML100K_SHA256, ML100K_URL, ensure_movielens_100k
from lusifer.data.model import INT32_LIMIT, Dataset, Fold, Item, Ratings, User

__all__ = [
    "DEFAULT_FOLDS",
    "ML100K_SHA256",
    "ML100K_URL",
    "STANDARD_GENRES",
    "VALID_FOLDS",
    "ensure_movielens_100k",
    "load_movielens_100k",
    "split_title_year",
]

DEFAULT_FOLDS = MOVIELENS_FOLDS
VALID_FOLDS = (*DEFAULT_FOLDS, "ua", "ub")
# The 19 genres of u.genre, in flag order; used when a directory lacks u.genre.
STANDARD_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# "Title (1995)", optionally followed by the "(V)" direct-to-video marker some entries carry.
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?:\s*\(V\))?\s*$")
_FIX = "point --data-dir at an unpacked MovieLens 100K directory"


def split_title_year(raw_title: str, release_date: str = "") -> tuple[str, int | None]:
    """Split "Toy Story (1995)" into ("Toy Story", 1995), falling back on the release date."""
    title = " ".join(raw_title.split())
    match = _TITLE_YEAR.match(title)
    if match:
        return match["title"], int(match["year"])
    # Release dates look like "01-Jan-1995"; the title year wins because it is the film's own.
    tail = release_date.strip()[-4:]
    return title, int(tail) if tail.isdigit() else None


class _Reader:
    """Reads dataset files as bytes and feeds each into one fingerprint as it goes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.hasher = hashlib.sha256()

    def read(self, path: Path, tag: str) -> bytes:
        if not path.exists():
            raise DataError(f"{path.name} not found in {path.parent}: {_FIX}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(
                f"cannot read {path} ({err.strerror or err}): make it a file you may read"
            ) from None
        # Tag and length framing make the hash depend on which file held which bytes.
        self.hasher.update(f"{tag}\0{len(data)}\0".encode())
        self.hasher.update(data)
        return data

    def text(self, name: str) -> str:
        # GroupLens wrote the files in latin-1 (u.item has accented titles).
        return self.read(self.data_dir / name, name).decode("latin-1")

    def lines(self, name: str) -> list[tuple[int, str]]:
        return _numbered(self.text(name))


def _numbered(text: str) -> list[tuple[int, str]]:
    # split("\n") rather than splitlines(): latin-1 text may hold \x85 or \x1c, which
    # splitlines() would treat as line breaks and so shift line numbers.
    rows = enumerate(text.split("\n"), start=1)
    return [(n, line.rstrip("\r")) for n, line in rows if line.strip()]


def _bad(name: str, lineno: int, problem: str) -> DataError:
    fix = "restore the original MovieLens 100K files (unpack ml-100k.zip again)"
    return DataError(f"{name} line {lineno}: {problem}: {fix}")


def _fields(name: str, lineno: int, line: str, sep: str, expected: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) != expected:
        raise _bad(name, lineno, f"expected {expected} {sep!r}-separated fields, got {len(fields)}")
    return fields


def _int(name: str, lineno: int, value: str, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _bad(name, lineno, f"{what} {value!r} is not an integer") from None
    if not -INT32_LIMIT <= number < INT32_LIMIT:
        raise _bad(name, lineno, f"{what} {value} does not fit the database's 32-bit integers")
    return number


def _parse_users(reader: _Reader) -> dict[int, User]:
    users: dict[int, User] = {}
    for n, line in reader.lines("u.user"):
        fields = _fields("u.user", n, line, "|", 5)
        user_id = _int("u.user", n, fields[0], "user id")
        if user_id in users:
            raise _bad("u.user", n, f"user id {user_id} appears twice")
        age = _int("u.user", n, fields[1], "age") if fields[1].strip() else None
        users[user_id] = User(user_id, age, fields[2].strip() or None, fields[3].strip() or None)
    return users


def _parse_genres(reader: _Reader) -> tuple[str, ...]:
    if not (reader.data_dir / "u.genre").is_file():
        return STANDARD_GENRES
    # Lines are "name|index" in index order; a wrong count shows up as bad u.item lines.
    return tuple(line.rpartition("|")[0].strip() for _, line in reader.lines("u.genre"))


def _parse_items(reader: _Reader, genres: tuple[str, ...]) -> dict[int, Item]:
    items: dict[int, Item] = {}
    n_fields = 5 + len(genres)
    for n, line in reader.lines("u.item"):
        fields = _fields("u.item", n, line, "|", n_fields)
        item_id = _int("u.item", n, fields[0], "item id")
        if item_id in items:
            raise _bad("u.item", n, f"item id {item_id} appears twice")
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise _bad("u.item", n, "genre flags must be 0 or 1")
        title, year = split_title_year(fields[1], fields[2])
        if not title:
            # A nameless item gives the model nothing to judge: its ratings would be noise.
            raise _bad("u.item", n, f"item {item_id} has no title")
        chosen = tuple(g for g, flag in zip(genres, flags, strict=True) if flag == "1")
        items[item_id] = Item(item_id, title, year, chosen, None)
    return items


def _rating_table(
    reader: _Reader, name: str, user_ids: NDArray[np.int64], item_ids: NDArray[np.int64]
) -> NDArray[np.int64]:
    text = reader.text(name)
    table = np.empty((0, 0), dtype=np.int64)
    if text.strip():
        with contextlib.suppress(ValueError):
            table = np.loadtxt(
                io.StringIO(text), dtype=np.int64, delimiter="\t", comments=None, ndmin=2
            )
    if table.shape[1:] == (4,) and _clean(table, user_ids, item_ids):
        return table
    # The vectorised checks only tell that something is wrong; this slow pass names the line.
    _diagnose(name, _numbered(text), set(user_ids.tolist()), set(item_ids.tolist()))
    raise _bad(name, 1, "no lines of the form user<TAB>item<TAB>rating<TAB>timestamp")


def _clean(
    table: NDArray[np.int64], user_ids: NDArray[np.int64], item_ids: NDArray[np.int64]
) -> bool:
    users, items, values = table[:, 0], table[:, 1], table[:, 2]
    if not (np.isin(users, user_ids).all() and np.isin(items, item_ids).all()):
        return False
    pairs = np.searchsorted(user_ids, users) * len(item_ids) + np.searchsorted(item_ids, items)
    return bool(((values >= 1) & (values <= 5)).all()) and len(np.unique(pairs)) == len(pairs)


def _diagnose(name: str, lines: list[tuple[int, str]], users: set[int], items: set[int]) -> None:
    seen: set[tuple[int, int]] = set()
    for n, line in lines:
        fields = _fields(name, n, line, "\t", 4)
        user_id, item_id, value, _ = (
            _int(name, n, f, what)
            for f, what in zip(fields, ("user id", "item id", "rating", "timestamp"), strict=True)
        )
        if not 1 <= value <= 5:
            raise _bad(name, n, f"rating {value} is outside 1..5")
        if user_id not in users:
            raise _bad(name, n, f"user {user_id} is not in u.user")
        if item_id not in items:
            raise _bad(name, n, f"item {item_id} is not in u.item")
        if (user_id, item_id) in seen:
            raise _bad(name, n, f"user {user_id} rates item {item_id} twice")
        seen.add((user_id, item_id))


def _parse_overviews(data: bytes, path: Path, items: dict[int, Item]) -> dict[int, str | None]:
    fix = "use a UTF-8 CSV with columns movie_id and overview"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problem = f"{path} is not valid UTF-8 ({err.reason} at byte {err.start})"
        raise DataError(f"{problem}: {fix}") from None
    # newline="" keeps line breaks inside quoted overviews for the csv module to handle.
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, [])
    if "movie_id" not in header or "overview" not in header:
        found = ", ".join(header) or "none"
        raise DataError(f"{path} lacks movie_id/overview columns (found: {found}): {fix}")
    id_col, text_col = header.index("movie_id"), header.index("overview")
    overviews: dict[int, str | None] = {}
    for row in rows:
        where = f"{path} line {rows.line_num}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, header has {len(header)}: {fix}")
        try:
            movie_id = int(row[id_col])
        except ValueError:
            raise DataError(f"{where}: movie_id {row[id_col]!r} is not an integer: {fix}") from None
        if movie_id not in items or movie_id in overviews:
            problem = "is not in u.item" if movie_id not in items else "appears twice"
            raise DataError(f"{where}: movie_id {movie_id} {problem}: {fix} for MovieLens 100K")
        overviews[movie_id] = " ".join(row[text_col].split()) or None
    return overviews


def load_movielens_100k(
    data_dir: Path, overviews_csv: Path | None = None, folds: Sequence[str] | None = None
) -> Dataset:
    """Load MovieLens 100K from its original files, with TMDB overviews when a CSV is given."""
    fold_names = tuple(dict.fromkeys(DEFAULT_FOLDS if folds is None else folds))
    unknown = [name for name in fold_names if name not in VALID_FOLDS]
    if unknown or not fold_names:
        problem = f"unknown fold {', '.join(unknown)}" if unknown else "no fold selected"
        raise DataError(f"{problem}: choose folds from {', '.join(VALID_FOLDS)}")
    if not data_dir.exists():
        raise DataError(f"MovieLens 100K directory {data_dir} does not exist: {_FIX}")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is a file, not a MovieLens 100K directory: {_FIX}")
    reader = _Reader(data_dir)
    users = _parse_users(reader)
    items = _parse_items(reader, _parse_genres(reader))
    user_ids, item_ids = np.array(sorted(users)), np.array(sorted(items))
    files = [f"{name}.{part}" for name in fold_names for part in ("base", "test")]
    splits = [Ratings.from_table(_rating_table(reader, f, user_ids, item_ids)) for f in files]
    loaded = {name: Fold(name, *splits[2 * k : 2 * k + 2]) for k, name in enumerate(fold_names)}
    if overviews_csv is not None:
        data = reader.read(overviews_csv, "overviews")
        for item_id, overview in _parse_overviews(data, overviews_csv, items).items():
            items[item_id] = dataclasses.replace(items[item_id], overview=overview)
    return Dataset(
        name="ml-100k",
        users=MappingProxyType(users),
        items=MappingProxyType(items),
        folds=MappingProxyType(loaded),
        fingerprint=reader.hasher.hexdigest(),
    )
