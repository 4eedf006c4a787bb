"""Generic CSV datasets: column mapping, seeded k-fold splits and input validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lusifer.core.errors import ConfigurationError, DataError
from lusifer.data import ColumnMapping, Dataset, User, load_csv_dataset

# MovieLens "latest"-style column names, to exercise the mapping.
COLUMNS = ColumnMapping(
    user_id="userId",
    item_id="movieId",
    rating="rating",
    timestamp="timestamp",
    title="title",
    genres="genres",
    overview="plot",
    age="age",
    gender="gender",
    occupation="job",
)
HEAD = "userId,movieId,rating,timestamp\n"
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{i},{(u + i) % 5 + 1},{1000 + 10 * u + i}\n" for u in (1, 2) for i in (1, 2, 3, 4, 5)
)
ITEMS = (
    "movieId,title,genres,plot\n"
    '1,Toy Story (1995),Animation|Children\'s|Comedy,"Toys\n come alive."\n'
    "2,Jumanji (1995),Adventure,\n"
    "3,Heat,,\n"
    "4,Sabrina (1995),Comedy|Romance,\n"
    "5,Nixon (1995),Drama,\n"
)
USERS = "userId,age,gender,job\n1,24,M,technician\n2,,F,\n"


def _files(tmp_path: Path, ratings: str = RATINGS, items: str = ITEMS) -> tuple[Path, Path, Path]:
    paths = (tmp_path / "ratings.csv", tmp_path / "items.csv", tmp_path / "users.csv")
    for path, text in zip(paths, (ratings, items, USERS), strict=True):
        path.write_text(text, encoding="utf-8")
    return paths


def _load(tmp_path: Path, **kwargs: object) -> Dataset:
    ratings, items, users = _files(tmp_path)
    return load_csv_dataset(ratings, items, users, columns=COLUMNS, **kwargs)  # type: ignore[arg-type]


def _error(*args: object, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        load_csv_dataset(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_items_users_and_ratings(tmp_path: Path) -> None:
    ds = _load(tmp_path, name="tiny")
    assert ds.name == "tiny"
    toy = ds.items[1]
    assert (toy.title, toy.year) == ("Toy Story", 1995)
    assert toy.genres == ("Animation", "Children's", "Comedy")
    assert toy.overview == "Toys come alive."
    assert ds.items[2].overview is None
    assert (ds.items[3].title, ds.items[3].year, ds.items[3].genres) == ("Heat", None, ())
    assert ds.users[1] == User(1, 24, "M", "technician")
    assert ds.users[2] == User(2, None, "F", None)


def test_folds_partition_the_ratings(tmp_path: Path) -> None:
    ds = _load(tmp_path)
    assert list(ds.folds) == ["f1", "f2", "f3", "f4", "f5"]
    all_pairs = {(u, i) for u in (1, 2) for i in range(1, 6)}
    tested: list[tuple[int, int]] = []
    for fold in ds.folds.values():
        train = {(r.user_id, r.item_id) for r in fold.train}
        test = {(r.user_id, r.item_id) for r in fold.test}
        # 10 ratings in 5 folds: 8 train / 2 test each, disjoint, covering everything.
        assert (len(train), len(test)) == (8, 2)
        assert train | test == all_pairs and not train & test
        tested += test
    assert sorted(tested) == sorted(all_pairs)
    rating = next(r for r in [*ds.folds["f1"].train, *ds.folds["f1"].test] if r.user_id == 1)
    assert rating.rating == (1 + rating.item_id) % 5 + 1


def test_folds_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    first, again = _load(tmp_path, seed=7), _load(tmp_path, seed=7)
    assert first.folds == again.folds
    assert first.fingerprint == again.fingerprint
    other = _load(tmp_path, seed=8)
    assert [f.test for f in other.folds.values()] != [f.test for f in first.folds.values()]
    assert other.fingerprint != first.fingerprint


def test_three_folds(tmp_path: Path) -> None:
    ds = _load(tmp_path, n_folds=3)
    assert [len(f.test) for f in ds.folds.values()] == [4, 3, 3]


def test_without_users_or_timestamps(tmp_path: Path) -> None:
    ratings, items, _ = _files(
        tmp_path, ratings="u,i,r\n3,2,4\n3,1,5\n4,1,2\n", items="i,title\n1,A\n2,B\n"
    )
    columns = ColumnMapping(user_id="u", item_id="i", rating="r", timestamp=None, title="title")
    ds = load_csv_dataset(ratings, items, columns=columns, n_folds=2, seed=1)
    assert ds.users[3] == User(3, None, None, None)
    assert set(ds.users) == {3, 4}
    fold = ds.folds["f1"]
    history = {**fold.train_by_user(), **fold.test_by_user()}
    # Without timestamps the file order stands in for time: row 0, 1, 2.
    stamps = {(r.user_id, r.item_id): r.timestamp for rs in history.values() for r in rs}
    assert stamps == {(3, 2): 0, (3, 1): 1, (4, 1): 2}


def test_year_column_wins(tmp_path: Path) -> None:
    ratings, items, users = _files(
        tmp_path, items="movieId,title,year\n1,Toy Story (1995),1996-01-01\n2,Heat,\n"
    )
    ratings.write_text(HEAD + "1,1,4,5\n1,2,3,6\n")
    columns = COLUMNS.model_copy(update={"genres": None, "overview": None, "year": "year"})
    ds = load_csv_dataset(ratings, items, users, columns=columns, n_folds=2)
    assert (ds.items[1].title, ds.items[1].year) == ("Toy Story", 1996)
    assert ds.items[2].year is None


def test_fractional_ratings_need_the_flag(tmp_path: Path) -> None:
    bad = HEAD + "1,1,3.5,5\n1,2,5.5,6\n2,1,0.5,7\n2,2,2.5,8\n2,3,4,9\n"
    ratings, items, users = _files(tmp_path, ratings=bad)
    message = _error(ratings, items, users, columns=COLUMNS)
    assert "ratings.csv line 2: rating 3.5 is not an integer in 1..5" in message
    assert "round_ratings" in message
    ds = load_csv_dataset(ratings, items, users, columns=COLUMNS, round_ratings=True)
    values = {(r.user_id, r.item_id): r.rating for f in ds.folds.values() for r in f.test}
    # Half up, then clipped: 3.5 -> 4, 5.5 -> 6 -> 5, 0.5 -> 1, 2.5 -> 3.
    assert values == {(1, 1): 4, (1, 2): 5, (2, 1): 1, (2, 2): 3, (2, 3): 4}


def test_non_numeric_rating(tmp_path: Path) -> None:
    ratings, items, users = _files(tmp_path, ratings=HEAD + "1,1,good,5\n")
    message = _error(ratings, items, users, columns=COLUMNS, round_ratings=True)
    assert "line 2: rating 'good' is not a number" in message


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    ratings, items, users = _files(tmp_path, ratings="user,movieId,score\n1,1,5\n")
    message = _error(ratings, items, users, columns=COLUMNS)
    assert "lacks column(s) userId, rating, timestamp" in message
    assert "found: user, movieId, score" in message


def test_non_utf8_file(tmp_path: Path) -> None:
    ratings, items, users = _files(tmp_path)
    items.write_bytes("movieId,title,genres,plot\n1,Amélie (2001),,\n".encode("latin-1"))
    ratings.write_text(HEAD + "1,1,5,1\n2,1,4,2\n")
    message = _error(ratings, items, users, columns=COLUMNS)
    assert str(items) in message and "not valid utf-8" in message
    assert "encoding='latin-1'" in message
    ds = load_csv_dataset(ratings, items, users, columns=COLUMNS, n_folds=2, encoding="latin-1")
    assert ds.items[1].title == "Amélie"


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        (HEAD + "1,9,5,1\n", "item 9 is not in"),
        (HEAD + "9,1,5,1\n", "user 9 is not in"),
        (HEAD + "1,1,5,1\n1,1,4,2\n", "line 3: user 1 rates item 1 twice"),
        (HEAD + "x,1,5,1\n", "line 2: user id 'x' is not a number"),
        (HEAD + "1,1,5\n", "line 2: 3 fields but the header has 4"),
        (HEAD + "1,1,5,1\n", "1 ratings, fewer than 5 folds"),
    ],
)
def test_bad_ratings(tmp_path: Path, ratings: str, expected: str) -> None:
    paths = _files(tmp_path, ratings=ratings)
    assert expected in _error(*paths, columns=COLUMNS)


def test_missing_file(tmp_path: Path) -> None:
    _, items, users = _files(tmp_path)
    assert "nope.csv not found" in _error(tmp_path / "nope.csv", items, users, columns=COLUMNS)


def test_duplicate_item(tmp_path: Path) -> None:
    paths = _files(tmp_path, items="movieId,title,genres,plot\n1,A,,\n1,B,,\n")
    assert "items.csv line 3: item id 1 appears twice" in _error(*paths, columns=COLUMNS)


def test_one_fold_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        _load(tmp_path, n_folds=1)


def test_a_short_item_row_is_refused_with_its_line(tmp_path: Path) -> None:
    paths = _files(tmp_path, items="movieId,title,genres,plot\n1,A,,\n2,B\n")
    assert "items.csv line 3: 2 fields but the header has 4" in _error(*paths, columns=COLUMNS)


@pytest.mark.parametrize(
    ("bad", "phrase"),
    [("x", "rating 'x' is not a number"), ("", "rating '' is not a number")],
)
def test_a_bad_value_deep_in_a_large_file_is_named_without_a_warning(
    tmp_path: Path, bad: str, phrase: str
) -> None:
    # Ratings are parsed in chunks of 2**18 rows: a column whose chunks differ in type must
    # still come out as the one clear line naming the row, with no DtypeWarning on the way.
    rows = [f"{u},{i},3,{i}" for u in range(1, 1_001) for i in range(1, 301)]
    rows[-1] = f"1000,300,{bad},300"
    ratings, items, users = _files(tmp_path, ratings=HEAD + "\n".join(rows) + "\n")
    items.write_text("movieId,title\n" + "".join(f"{i},Film {i}\n" for i in range(1, 301)))
    users.write_text("userId,age\n" + "".join(f"{u},30\n" for u in range(1, 1_001)))
    columns = ColumnMapping(user_id="userId", item_id="movieId", age="age")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = _error(ratings, items, users, columns=columns)
    assert phrase in message and "line 300001" in message, message
