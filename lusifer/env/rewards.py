"""Rewards of a slate and the simulated user's decision to leave, as pure functions.

A slate's reward is computed from the ratings the user gave its *valid* items (masked items
are not shown, see ``lusifer.env``), then ``invalid_penalty`` is subtracted per masked item.
Items the LLM left unrated after re-asking count in no reward. The definitions:

- ``mean_rating``: the mean of the ratings (1..5); 0.0 when no item was rated.
- ``count_ge_4``: how many items were rated 4 or 5 ("liked").
- ``sum_centered``: the sum of ``rating - 3``: a liked item adds, a disliked one subtracts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lusifer.env.config import RewardName

RewardFn = Callable[[Sequence[int]], float]


def mean_rating(ratings: Sequence[int]) -> float:
    """The mean rating of the slate; 0.0 when nothing was rated."""
    return float(sum(ratings)) / len(ratings) if ratings else 0.0


def count_ge_4(ratings: Sequence[int]) -> float:
    """How many items of the slate the user liked (rated 4 or 5)."""
    return float(sum(1 for r in ratings if r >= 4))


def sum_centered(ratings: Sequence[int]) -> float:
    """The sum of ``rating - 3``: positive for liked items, negative for disliked ones."""
    return float(sum(r - 3 for r in ratings))


REWARDS: dict[RewardName, RewardFn] = {
    "mean_rating": mean_rating,
    "count_ge_4": count_ge_4,
    "sum_centered": sum_centered,
}


def slate_reward(
    fn: RewardFn, ratings: Sequence[int], n_invalid: int, invalid_penalty: float
) -> float:
    """The reward of a step: ``fn`` of the valid ratings minus the penalty for masked items."""
    return float(fn(ratings)) - invalid_penalty * n_invalid


def is_low(ratings: Sequence[int], leave_below: float) -> bool:
    """Whether a slate disappointed: its mean rating is below the threshold, or nothing rated."""
    return not ratings or mean_rating(ratings) < leave_below


def update_low_streak(streak: int, ratings: Sequence[int], leave_below: float | None) -> int:
    """Consecutive disappointing slates so far, including this one (0 when leaving is off)."""
    if leave_below is None:
        return 0
    return streak + 1 if is_low(ratings, leave_below) else 0
