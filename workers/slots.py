"""Calls in flight per worker process: one limit shared by jobs and the rating chunks they start.

A profile job hands its user's rating chunks to a pool of threads once the profile is built,
instead of sending one message per chunk through the queue and reading the profile back, and
its Celery thread goes on to the next profile job. The limit here keeps the calls the process
has in flight at its Celery concurrency, whoever makes them, and lets profile calls go first:
a profile is a chain of calls that its ratings wait for, so starting chains early and rating
in the gaps finishes a run soonest (the schedule the benchmark's ideal assumes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from celery import signals

from lusifer.llm import ChatRequest
from lusifer.settings import get_settings

_lock = threading.Lock()
_concurrency: int | None = None
_slots: PrioritySlots | None = None
_pool: ThreadPoolExecutor | None = None


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _record_concurrency(sender: Any = None, **_: Any) -> None:
    # The worker's --concurrency (its threads) is the number of calls it may keep in flight.
    global _concurrency
    value = getattr(sender, "concurrency", None)
    if isinstance(value, int) and value > 0:
        _concurrency = value


def concurrency() -> int:
    """Calls this process keeps in flight: the worker's concurrency, else the setting."""
    return _concurrency or get_settings().worker_concurrency


class PrioritySlots:
    """A counting semaphore whose urgent waiters are served before the others."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        # One condition per class of waiter, so a release wakes one waiter, not all of them.
        self._urgent = threading.Condition(self._lock)
        self._other = threading.Condition(self._lock)
        self._urgent_waiting = 0

    def acquire(self, urgent: bool) -> None:
        """Take a slot, waiting while none is free (or while an urgent waiter is ahead)."""
        with self._lock:
            if urgent:
                self._urgent_waiting += 1
                try:
                    while self._free == 0:
                        self._urgent.wait()
                finally:
                    self._urgent_waiting -= 1
            else:
                while self._free == 0 or self._urgent_waiting:
                    self._other.wait()
            self._free -= 1

    @contextmanager
    def hold(self, request: ChatRequest) -> Iterator[None]:
        """A slot for the time of one call (cache lookup, budget check, call, record)."""
        self.acquire(urgent=request.schema_name == "profile")
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Give a slot back and wake the waiter who gets it."""
        with self._lock:
            self._free += 1
            if self._urgent_waiting:
                self._urgent.notify()
            else:
                self._other.notify()


def _semaphore() -> PrioritySlots:
    global _slots
    with _lock:
        if _slots is None:
            _slots = PrioritySlots(concurrency())
        return _slots


def chunk_pool() -> ThreadPoolExecutor:
    """Threads for rating chunks; as many as there are slots, so a chunk only waits for a slot."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=concurrency(), thread_name_prefix="chunk")
        return _pool


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _finish_chunks(**_: Any) -> None:
    # A warm shutdown waits for the running tasks; the rating chunks they handed on finish too.
    with _lock:
        pool = _pool
    if pool is not None:
        pool.shutdown(wait=True)


def call_slot(request: ChatRequest) -> AbstractContextManager[None]:
    """Hold one of this process's call slots around a call; profile steps before ratings."""
    return _semaphore().hold(request)
