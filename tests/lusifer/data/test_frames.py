"""DataFrames checked column by column: each bad input names the column and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lusifer.core.errors import DataError
from lusifer.data import ColumnMapping, load_csv_dataset, user_info
from lusifer.data.frames import FrameColumns, duplicate_pairs
from lusifer.data.from_frames import UNKNOWN_RATING, fold_dataset, load_frames, pairs_to_simulate

COLUMNS = FrameColumns(
    user_id="uid", item_id="movie", rating="stars", timestamp="ts", age="age", gender="gender"
)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame({"uid": [1, 2], "age": [24, 53], "gender": ["M", "F"]})
    items = pd.DataFrame({"movie": [10, 20, 30], "title": ["A (1995)", "B", "C (2001)"]})
    ratings = pd.DataFrame(
        {"uid": [1, 1, 2, 2], "movie": [10, 20, 10, 30], "stars": [5, 3, 4, 1], "ts": [4, 3, 2, 1]}
    )
    return users, items, ratings


def _error(ratings: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None) -> str:
    with pytest.raises(DataError) as info:
        load_frames(ratings, items, users, COLUMNS)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_frames_become_users_items_and_a_history() -> None:
    users, items, ratings = _frames()
    data = load_frames(ratings, items, users, COLUMNS)
    assert data.history.dtype == np.int64 and data.history.shape == (4, 4)
    assert data.items[10].title == "A" and data.items[10].year == 1995
    assert user_info(data.users[2]) == "Age: 53; Gender: female"
    again = load_frames(ratings.copy(), items.copy(), users.copy(), COLUMNS)
    assert again.fingerprint == data.fingerprint
    changed = ratings.assign(stars=[5, 3, 4, 2])
    assert load_frames(changed, items, users, COLUMNS).fingerprint != data.fingerprint


def test_ready_made_texts_are_used_as_they_are() -> None:
    users, items, ratings = _frames()
    users["info"] = ["a film student", "a retired judge"]
    items["text"] = ["Alpha, a drama", "Beta, a comedy", "Gamma"]
    columns = COLUMNS.model_copy(update={"user_info": "info", "item_info": "text"})
    data = load_frames(ratings, items.drop(columns="title"), users, columns)
    assert user_info(data.users[1]) == "a film student"
    assert data.items[20].title == "Beta, a comedy"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.drop(columns="stars"), "ratings_df lacks column(s) stars"),
        (lambda r: r.assign(stars=[5, 3, 7, 1]), "row 2 column 'stars': rating 7"),
        (lambda r: r.assign(stars=[5, 3, 4.5, 1]), "is not an integer in 1..5"),
        (lambda r: r.assign(uid=[1, 1.5, 2, 2]), "row 1 column 'uid': user id 1.5 is not an"),
        (lambda r: r.assign(movie=["10", "x", "10", "30"]), "column 'movie': item id 'x'"),
        (lambda r: r.assign(movie=[10, 10, 10, 30]), "row 1: user 1 rates item 10 twice"),
        (lambda r: r.assign(movie=[10, 20, 10, 99]), "holds item ids not in items_df"),
        (lambda r: r.assign(uid=[1, 1, 2, 3]), "holds user ids not in users_df"),
        (lambda r: r.assign(uid=[1, 1, 2, 2**40]), "32-bit"),
    ],
)
def test_bad_ratings_name_the_column_and_the_fix(change: object, expected: str) -> None:
    users, items, ratings = _frames()
    message = _error(change(ratings), items, users)  # type: ignore[operator]
    assert expected in message
    assert ": " in message  # the fix follows the problem


def test_missing_mapped_columns_are_listed_with_what_the_frame_has() -> None:
    users, items, ratings = _frames()
    message = _error(ratings.rename(columns={"uid": "user"}), items, users)
    assert "lacks column(s) uid (found: user, movie, stars, ts)" in message
    assert "columns=" in message


def test_rounding_is_asked_for() -> None:
    users, items, ratings = _frames()
    half = ratings.assign(stars=[4.5, 3, 0.5, 5.5])
    data = load_frames(half, items, users, COLUMNS, round_ratings=True)
    assert data.history[:, 2].tolist() == [5, 3, 1, 5]


def test_test_pairs_are_checked_against_the_history() -> None:
    users, items, ratings = _frames()
    data = load_frames(ratings, items, users, COLUMNS)
    test = pairs_to_simulate(
        data, pd.DataFrame({"uid": [1, 2], "movie": [30, 20], "stars": [2, 5]})
    )
    assert test[:, :3].tolist() == [[1, 30, 2], [2, 20, 5]]
    unknown = pairs_to_simulate(data, pd.DataFrame({"uid": [1], "movie": [30]}))
    assert unknown[0, 2] == UNKNOWN_RATING
    for frame, expected in [
        (pd.DataFrame({"uid": [3], "movie": [30]}), "holds user ids not in users_df"),
        (pd.DataFrame({"uid": [1, 1], "movie": [30, 30]}), "appears twice"),
        (pd.DataFrame({"uid": [1], "movie": [10]}), "already rated item 10"),
        (pd.DataFrame({"user": [1], "movie": [30]}), "test_df lacks column(s) uid"),
        (pd.DataFrame({"uid": ["one"], "movie": [30]}), "column 'uid': user id 'one'"),
        (pd.DataFrame({"uid": [1], "movie": [30], "stars": [9]}), "rating 9"),
    ]:
        with pytest.raises(DataError, match="test_df") as info:
            pairs_to_simulate(data, frame)
        assert expected in str(info.value)


def test_a_fold_of_the_users_under_test() -> None:
    users, items, ratings = _frames()
    data = load_frames(ratings, items, users, COLUMNS)
    test = pairs_to_simulate(data, pd.DataFrame({"uid": [1], "movie": [30]}))
    dataset = fold_dataset(data, test, fold="api")
    fold = dataset.folds["api"]
    # Only user 1's history is kept, oldest first by timestamp.
    assert [(r.item_id, r.timestamp) for r in fold.train_by_user()[1]] == [(20, 3), (10, 4)]
    assert 2 not in fold.train_by_user()
    assert [(r.user_id, r.item_id) for r in fold.test] == [(1, 30)]


def test_parquet_files_load_like_csv(tmp_path: Path) -> None:
    _, items, ratings = _frames()
    ratings.to_parquet(tmp_path / "r.parquet")
    items.to_csv(tmp_path / "i.csv", index=False)
    ratings.to_csv(tmp_path / "r.csv", index=False)
    columns = ColumnMapping(user_id="uid", item_id="movie", rating="stars", timestamp="ts")
    load = {"columns": columns, "n_folds": 2}
    from_parquet = load_csv_dataset(tmp_path / "r.parquet", tmp_path / "i.csv", **load)  # type: ignore[arg-type]
    from_csv = load_csv_dataset(tmp_path / "r.csv", tmp_path / "i.csv", **load)  # type: ignore[arg-type]
    assert from_parquet.folds == from_csv.folds
    ratings.assign(stars=[5, 3, 6, 1]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet row 2 column 'stars': rating 6"):
        load_csv_dataset(tmp_path / "bad.parquet", tmp_path / "i.csv", **load)  # type: ignore[arg-type]
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="is not a readable Parquet file"):
        load_csv_dataset(tmp_path / "broken.parquet", tmp_path / "i.csv", **load)  # type: ignore[arg-type]


def test_duplicate_pairs_names_the_first_repeat_across_the_32_bit_range() -> None:
    low, high = -(2**31), 2**31 - 1
    table = np.array(
        [[high, low, 3, 0], [low, high, 3, 0], [high, high, 3, 0], [low, high, 4, 9], [1, 2, 3, 0]]
    )
    assert duplicate_pairs(table) == 3
    assert duplicate_pairs(table[[0, 1, 2, 4]]) is None
    assert duplicate_pairs(np.empty((0, 4), dtype=np.int64)) is None
    repeated = np.array([[5, 6, 1, 0], [7, 8, 1, 0], [5, 6, 2, 0], [7, 8, 2, 0], [5, 6, 3, 0]])
    assert duplicate_pairs(repeated) == 2
