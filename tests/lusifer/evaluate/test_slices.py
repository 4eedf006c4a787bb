"""Cold-start slice and history-length buckets against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from lusifer.evaluate.slices import (
    bucket_labels,
    cold_start_mask,
    history_bucket,
    history_lengths,
    scores_by_bucket,
)


def test_history_lengths_count_training_ratings() -> None:
    train_users = [1, 1, 1, 2, 5, 5]
    assert history_lengths(train_users, [1, 2, 3, 5, 1]).tolist() == [3, 1, 0, 2, 3]
    assert history_lengths([], [7]).tolist() == [0]


def test_cold_start_mask_is_strictly_below_k() -> None:
    assert cold_start_mask([3, 1, 0, 2, 3], k=2).tolist() == [False, True, True, False, False]
    assert cold_start_mask([19, 20], k=20).tolist() == [True, False]


def test_history_buckets_and_labels() -> None:
    history = [0, 19, 20, 49, 50, 199, 200, 500]
    assert history_bucket(history).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    assert bucket_labels() == ["<20", "20–49", "50–99", "100–199", "≥200"]
    assert bucket_labels((10,)) == ["<10", "≥10"]


def test_scores_by_bucket_by_hand() -> None:
    # bucket <20: true [1,2], pred [2,2]: errors [1,0] -> RMSE sqrt(1/2), MAE 0.5, 1 user
    # bucket ≥20: true [3,4], pred [5,4]: errors [2,0] -> RMSE sqrt(4/2), MAE 1.0, 2 users
    scores = scores_by_bucket(
        [1, 2, 3, 4], [2, 2, 5, 4], users=[1, 1, 2, 3], history=[5, 5, 30, 30], edges=(20,)
    )
    assert [s.label for s in scores] == ["<20", "≥20"]
    assert [s.n for s in scores] == [2, 2]
    assert [s.n_users for s in scores] == [1, 2]
    assert scores[0].rmse == pytest.approx(math.sqrt(0.5))
    assert scores[0].mae == pytest.approx(0.5)
    assert scores[1].rmse == pytest.approx(math.sqrt(2.0))
    assert scores[1].mae == pytest.approx(1.0)


def test_empty_buckets_are_kept_as_nan() -> None:
    scores = scores_by_bucket([3], [3], users=[1], history=[5])
    assert len(scores) == 5
    assert scores[0].n == 1 and scores[0].rmse == 0.0
    assert all(s.n == 0 and math.isnan(s.rmse) for s in scores[1:])
