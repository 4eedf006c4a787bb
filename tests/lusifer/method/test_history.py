"""History batching, written once for the planner and the environment."""

from __future__ import annotations

import pytest

from lusifer.method.history import history_batches


def test_the_last_n_in_batches_oldest_first() -> None:
    history = list(range(1, 13))  # 12 ratings, oldest first
    assert history_batches(history, last=10, size=4) == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12]]


def test_a_short_history_is_taken_whole() -> None:
    assert history_batches([1, 2, 3], last=40, size=10) == [[1, 2, 3]]
    assert history_batches([], last=40, size=10) == []


def test_a_batch_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        history_batches([1], last=1, size=0)
