"""Reward definitions and the leave rule against hand-computed values."""

from __future__ import annotations

import pytest

from lusifer.env.rewards import (
    REWARDS,
    count_ge_4,
    is_low,
    mean_rating,
    slate_reward,
    sum_centered,
    update_low_streak,
)


def test_the_definitions() -> None:
    ratings = [5, 4, 2, 1]
    assert mean_rating(ratings) == 3.0
    assert count_ge_4(ratings) == 2.0
    assert sum_centered(ratings) == (2 + 1 - 1 - 2)
    assert sum_centered([5, 5, 3]) == 4.0
    assert mean_rating([]) == count_ge_4([]) == sum_centered([]) == 0.0
    assert set(REWARDS) == {"mean_rating", "count_ge_4", "sum_centered"}


def test_the_penalty_per_masked_item() -> None:
    assert slate_reward(mean_rating, [4, 5], 1, 0.5) == pytest.approx(4.0)
    assert slate_reward(count_ge_4, [4, 5, 1], 2, 1.0) == pytest.approx(0.0)


def test_the_leave_rule() -> None:
    assert is_low([2, 2, 3], 2.5) and not is_low([2, 3], 2.5) and is_low([], 1.0)
    assert update_low_streak(0, [1], None) == 0
    assert update_low_streak(1, [1, 2], 2.5) == 2
    assert update_low_streak(3, [5], 2.5) == 0
