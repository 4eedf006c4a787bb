"""Which ratings a profile is built from: the last N of a history, in batches, oldest first.

The paper takes the last N training ratings (N=40) in chronological order and feeds them in
batches of 10: the first batch writes the profile, each later one updates it. The batch runs
and the environment both cut histories here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def history_batches(history: Sequence[T], last: int, size: int) -> list[list[T]]:
    """The last ``last`` entries of a chronological ``history``, in batches of ``size``."""
    if size < 1:
        raise ValueError(f"a batch holds at least one rating, not {size}")
    tail = list(history[-last:]) if last > 0 else []
    return [tail[start : start + size] for start in range(0, len(tail), size)]
