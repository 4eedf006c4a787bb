"""MovieLens 100K loading: the real files (when LUSIFER_DATA_DIR is set) and small bad ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lusifer.core.errors import DataError
from lusifer.data import Dataset, Rating, load_movielens_100k
from lusifer.data.movielens import STANDARD_GENRES, split_title_year

# ---------------------------------------------------------------- the real data set

_DATA_ROOT = os.environ.get("LUSIFER_DATA_DIR")
needs_real_data = pytest.mark.skipif(
    not _DATA_ROOT,
    reason="LUSIFER_DATA_DIR is unset: point it at a directory holding ml-100k/ and tmdb/",
)
# sha256 over the original u.user, u.genre, u.item, u1..u5 files and the TMDB overview CSV;
# a change means the data (or the hashing scheme) changed and past runs are not comparable.
REAL_FINGERPRINT = "cce2c16021908d636b49cb7275a9834ec2da7aebd21a5e023c8601575e3b6194"


@pytest.fixture(scope="module")
def real() -> Dataset:
    assert _DATA_ROOT
    root = Path(_DATA_ROOT)
    return load_movielens_100k(root / "ml-100k", root / "tmdb" / "ml-100k_movies_tmdb.csv")


@needs_real_data
def test_real_counts(real: Dataset) -> None:
    assert len(real.users) == 943
    assert len(real.items) == 1682
    assert list(real.folds) == ["u1", "u2", "u3", "u4", "u5"]
    for fold in real.folds.values():
        assert (len(fold.train), len(fold.test)) == (80000, 20000)


@needs_real_data
def test_real_items_and_users(real: Dataset) -> None:
    toy_story = real.items[1]
    assert toy_story.title == "Toy Story"
    assert toy_story.year == 1995
    assert toy_story.genres == ("Animation", "Children's", "Comedy")
    assert toy_story.overview is not None and toy_story.overview.startswith("Led by Woody")
    user = real.users[1]
    assert (user.age, user.gender, user.occupation) == (24, "M", "technician")
    # latin-1 titles decode to the right characters.
    assert any("é" in item.title for item in real.items.values())


@needs_real_data
def test_real_overviews(real: Dataset) -> None:
    # The CSV has 1,591 rows; two of them have an empty overview, which becomes None.
    with_overview = [item for item in real.items.values() if item.overview]
    assert len(with_overview) == 1589
    assert all("\n" not in item.overview for item in with_overview if item.overview)


@needs_real_data
def test_real_train_history_is_chronological(real: Dataset) -> None:
    fold = real.folds["u1"]
    by_user = fold.train_by_user()
    assert sum(len(r) for r in by_user.values()) == 80000
    for ratings in by_user.values():
        keys = [(r.timestamp, r.item_id) for r in ratings]
        assert keys == sorted(keys)
    for ratings in fold.test_by_user().values():
        assert [r.item_id for r in ratings] == sorted(r.item_id for r in ratings)


@needs_real_data
def test_real_fold_ratings_match(real: Dataset) -> None:
    fold = real.folds["u1"]
    assert Rating(1, 1, 5, 874965758) in fold.train
    assert not {(r.user_id, r.item_id) for r in fold.train} & {
        (r.user_id, r.item_id) for r in fold.test
    }


@needs_real_data
def test_real_fingerprint_is_stable(real: Dataset) -> None:
    assert real.fingerprint == REAL_FINGERPRINT
    assert _DATA_ROOT
    only_u1 = load_movielens_100k(Path(_DATA_ROOT) / "ml-100k", folds=["u1"])
    assert list(only_u1.folds) == ["u1"]
    assert only_u1.fingerprint != REAL_FINGERPRINT


# ---------------------------------------------------------------- small hand-written files

_FLAGS_TOY = "|".join("1" if g in ("Animation", "Comedy") else "0" for g in STANDARD_GENRES)
_FLAGS_NONE = "|".join("0" for _ in STANDARD_GENRES)


def _write_dir(root: Path, *, base: str | None = None, test: str | None = None) -> Path:
    data = root / "ml"
    data.mkdir()
    (data / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    items = (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{_FLAGS_TOY}\n"
        f"2|Amélie|14-Mar-2001||http://x|{_FLAGS_NONE}\n"
        f"3|Land Before Time III (1995) (V)|||http://x|{_FLAGS_NONE}\n"
    )
    (data / "u.item").write_bytes(items.encode("latin-1"))
    (data / "u1.base").write_text(base or "1\t1\t5\t300\n1\t2\t3\t100\n1\t3\t4\t100\n2\t1\t2\t50\n")
    (data / "u1.test").write_text(test or "2\t3\t4\t60\n2\t2\t1\t70\n")
    return data


def _error(data: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        load_movielens_100k(data, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_small_directory_loads(tmp_path: Path) -> None:
    ds = load_movielens_100k(_write_dir(tmp_path), folds=["u1"])
    assert ds.name == "ml-100k"
    assert ds.items[1].title == "Toy Story"
    assert ds.items[1].genres == ("Animation", "Comedy")
    assert (ds.items[2].title, ds.items[2].year) == ("Amélie", 2001)  # year from the date
    assert (ds.items[3].title, ds.items[3].year) == ("Land Before Time III", 1995)
    fold = ds.folds["u1"]
    # Oldest first; the tie at t=100 is broken by item id.
    assert [r.item_id for r in fold.train_by_user()[1]] == [2, 3, 1]
    assert [r.item_id for r in fold.test_by_user()[2]] == [2, 3]


def test_genre_names_come_from_u_genre(tmp_path: Path) -> None:
    data = _write_dir(tmp_path)
    names = ["g" + str(i) for i in range(19)]
    (data / "u.genre").write_text("".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n")
    ds = load_movielens_100k(data, folds=["u1"])
    assert ds.items[1].genres == ("g3", "g5")


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    data = _write_dir(tmp_path)
    first = load_movielens_100k(data, folds=["u1"]).fingerprint
    assert load_movielens_100k(data, folds=["u1"]).fingerprint == first
    overviews = tmp_path / "ov.csv"
    overviews.write_text("movie_id,overview\n1,Toys.\n")
    with_overviews = load_movielens_100k(data, overviews, folds=["u1"]).fingerprint
    assert with_overviews != first
    overviews.write_text("movie_id,overview\n1,Other toys.\n")
    assert load_movielens_100k(data, overviews, folds=["u1"]).fingerprint != with_overviews


def test_overviews_csv(tmp_path: Path) -> None:
    overviews = tmp_path / "ov.csv"
    overviews.write_text(
        'title,movie_id,overview,extra\nx,1,"Toys\nlive\n\n happily.",y\nx,2,,y\nx,3,  ,y\n'
    )
    ds = load_movielens_100k(_write_dir(tmp_path), overviews, folds=["u1"])
    assert ds.items[1].overview == "Toys live happily."
    assert ds.items[2].overview is None
    assert ds.items[3].overview is None


def test_overviews_missing_columns(tmp_path: Path) -> None:
    overviews = tmp_path / "ov.csv"
    overviews.write_text("id,plot\n1,Toys.\n")
    message = _error(_write_dir(tmp_path), overviews_csv=overviews, folds=["u1"])
    assert "movie_id" in message and "found: id, plot" in message


def test_overviews_unknown_movie(tmp_path: Path) -> None:
    overviews = tmp_path / "ov.csv"
    overviews.write_text("movie_id,overview\n99,Toys.\n")
    message = _error(_write_dir(tmp_path), overviews_csv=overviews, folds=["u1"])
    assert "line 2" in message and "movie_id 99 is not in u.item" in message


def test_missing_directory(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere")
    assert "does not exist" in message and "--data-dir" in message


@pytest.mark.parametrize("name", ["u.user", "u.item", "u1.base", "u1.test"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    data = _write_dir(tmp_path)
    (data / name).unlink()
    message = _error(data, folds=["u1"])
    assert message.startswith(f"{name} not found in {data}")


def test_unknown_fold(tmp_path: Path) -> None:
    data = _write_dir(tmp_path)
    message = _error(data, folds=["u1", "u9"])
    assert "unknown fold u9" in message and "u1, u2, u3, u4, u5, ua, ub" in message
    assert "no fold selected" in _error(data, folds=[])


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("1\t1\t5\t300\n1\t2\t3\n", "u1.base line 2: expected 4 '\\t'-separated fields, got 3"),
        ("1\t1\t5\t300\n\n1\tx\t3\t5\n", "u1.base line 3: item id 'x' is not an integer"),
        ("1\t1\t6\t300\n", "u1.base line 1: rating 6 is outside 1..5"),
        ("1\t1\t0\t300\n", "u1.base line 1: rating 0 is outside 1..5"),
        ("7\t1\t5\t300\n", "u1.base line 1: user 7 is not in u.user"),
        ("1\t8\t5\t300\n", "u1.base line 1: item 8 is not in u.item"),
        ("1\t1\t5\t300\n1\t1\t4\t301\n", "u1.base line 2: user 1 rates item 1 twice"),
        ("1 1 5 300\n", "u1.base line 1: expected 4 '\\t'-separated fields, got 1"),
    ],
)
def test_bad_rating_lines(tmp_path: Path, base: str, expected: str) -> None:
    message = _error(_write_dir(tmp_path, base=base), folds=["u1"])
    assert message.startswith(expected)


def test_empty_split_file(tmp_path: Path) -> None:
    data = _write_dir(tmp_path)
    (data / "u1.test").write_text("")
    assert "u1.test" in _error(data, folds=["u1"])


def test_bad_user_and_item_lines(tmp_path: Path) -> None:
    data = _write_dir(tmp_path)
    (data / "u.user").write_text("1|24|M|technician|85711\n2|old|F|other|94043\n")
    assert _error(data, folds=["u1"]).startswith("u.user line 2: age 'old' is not an integer")
    (data / "u.user").write_text("1|24|M|technician\n")
    assert _error(data, folds=["u1"]).startswith("u.user line 1: expected 5")
    (data / "u.user").write_text("1|24|M|technician|1\n1|25|F|other|2\n")
    assert "user id 1 appears twice" in _error(data, folds=["u1"])
    (data / "u.user").write_text("1|24|M|technician|1\n2|25|F|other|2\n")
    (data / "u.item").write_text(f"1|Toy Story (1995)|01-Jan-1995||x|{_FLAGS_TOY}|1\n")
    assert _error(data, folds=["u1"]).startswith("u.item line 1: expected 24")


def test_split_title_year() -> None:
    assert split_title_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title_year("Heidi Fleiss: Hollywood Madam (1995) ") == (
        "Heidi Fleiss: Hollywood Madam",
        1995,
    )
    assert split_title_year("unknown", "") == ("unknown", None)
    assert split_title_year("No Year", "01-Jan-1997") == ("No Year", 1997)
