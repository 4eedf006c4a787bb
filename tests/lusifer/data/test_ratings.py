"""Ratings as columns: compact, read-only, a sequence of Rating, grouped per user in one sort."""

from __future__ import annotations

import numpy as np
import pytest

from lusifer.data import Fold, Rating, Ratings

RECORDS = [
    Rating(7, 30, 4, 200),
    Rating(2, 11, 5, 100),
    Rating(7, 12, 1, 100),
    Rating(2, 10, 3, 100),  # same second as (2, 11): the item id breaks the tie
    Rating(7, 31, 2, 50),
]


def test_columns_are_compact_and_read_only() -> None:
    ratings = Ratings.of(RECORDS)
    assert ratings.user_ids.dtype == np.int32 and ratings.item_ids.dtype == np.int32
    assert ratings.ratings.dtype == np.int8 and ratings.timestamps.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        ratings.ratings[0] = 5
    with pytest.raises(ValueError, match="different lengths"):
        Ratings([1, 2], [1], [3], [0])


def test_reads_as_the_sequence_of_records_it_was_made_from() -> None:
    ratings = Ratings.of(RECORDS)
    assert list(ratings) == RECORDS and len(ratings) == 5
    assert ratings[1] == RECORDS[1] and ratings[-1] == RECORDS[-1]
    assert list(ratings[1:3]) == RECORDS[1:3] and isinstance(ratings[1:3], Ratings)
    assert Rating(7, 12, 1, 100) in ratings and Rating(7, 12, 2, 100) not in ratings
    assert ratings == Ratings.of(RECORDS) and ratings != Ratings.of(RECORDS[:4])
    assert all(type(value) is int for value in (ratings[0].user_id, ratings[0].timestamp))
    with pytest.raises(IndexError):
        ratings[5]
    big = 2**40  # timestamps keep 64 bits
    assert Ratings.from_table(np.array([[1, 2, 3, big]]))[0].timestamp == big


def test_subsets_keep_their_order() -> None:
    ratings = Ratings.of(RECORDS)
    assert list(ratings.of_users([7])) == [r for r in RECORDS if r.user_id == 7]
    assert list(ratings.take(np.array([4, 0]))) == [RECORDS[4], RECORDS[0]]
    assert len(ratings.of_users([99])) == 0


def test_positions_of_pairs() -> None:
    ratings = Ratings.of(RECORDS)
    found = ratings.positions(np.array([2, 7, 7, 5]), np.array([10, 31, 11, 10]))
    assert found.tolist() == [3, 4, -1, -1]


def test_grouped_histories_are_oldest_first_and_tests_by_item() -> None:
    ratings = Ratings.of(RECORDS)
    history = ratings.grouped(chronological=True)
    assert history.users.tolist() == [2, 7]
    assert history.pairs(0) == [(10, 3), (11, 5)]
    assert history.pairs(1) == [(31, 2), (12, 1), (30, 4)]
    by_item = ratings.grouped(chronological=False)
    assert by_item.pairs(1) == [(12, 1), (30, 4), (31, 2)]
    assert history.index(7) == 1 and history.index(3) is None and history.index(99) is None


def test_fold_groupings_as_records() -> None:
    fold = Fold.of("f", RECORDS, RECORDS[:2])
    assert fold.train_by_user() == {
        2: [RECORDS[3], RECORDS[1]],
        7: [RECORDS[4], RECORDS[2], RECORDS[0]],
    }
    assert fold.test_by_user() == {2: [RECORDS[1]], 7: [RECORDS[0]]}
    empty = Fold.of("e", [], [])
    assert empty.train_by_user() == {} and len(empty.test) == 0


def test_views_share_the_columns_and_read_as_copies() -> None:
    ratings = Ratings.of(RECORDS)
    mask = np.array([True, False, True, True, False])
    view = ratings.view(mask)
    assert view == ratings.take(mask) and len(view) == 3
    assert view[1] == RECORDS[2] and view[-1] == RECORDS[3]
    assert list(view) == [RECORDS[0], RECORDS[2], RECORDS[3]]
    again = view.view(np.array([False, True, True]))  # a view of a view names base rows
    assert list(again) == [RECORDS[2], RECORDS[3]]
    assert list(again.take(np.array([1]))) == [RECORDS[3]]
    assert view.grouped(chronological=True).pairs(1) == [(12, 1), (30, 4)]
    assert view.positions([7], [12]).tolist() == [1]
