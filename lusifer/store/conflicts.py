"""Deadlocks and serialization failures: transient, so the transaction is simply run again.

A job becoming done makes its dependents ready through a trigger (migration 0006), which locks
those rows after the job's own; `resume` resets a run's unfinished jobs in one statement, in
whatever order the table holds them. The two can wait on each other. PostgreSQL then aborts one
transaction (SQLSTATE 40P01) and the other goes on: the aborted one only has to run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

# Class 40, "transaction rollback": deadlock detected and serialization failure.
CONFLICT_STATES = frozenset({"40P01", "40001"})
ATTEMPTS = 6

P = ParamSpec("P")
T = TypeVar("T")


def is_conflict(err: BaseException) -> bool:
    """A transaction that lost a deadlock or a serialization race (any driver)."""
    for cause in (err, getattr(err, "orig", None), err.__cause__):
        if getattr(cause, "sqlstate", None) in CONFLICT_STATES:
            return True
    return False


def retry_conflicts(fn: Callable[P, T]) -> Callable[P, T]:
    """Run ``fn`` (one whole transaction) again when it lost a deadlock, a few times at most."""
    retried: Callable[P, T] = retry(
        retry=retry_if_exception(is_conflict),
        stop=stop_after_attempt(ATTEMPTS),
        # Jittered, so the two sides of a deadlock do not meet again in lockstep; bounded.
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )(fn)
    return retried
