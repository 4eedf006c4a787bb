"""Calls in flight per worker process: one limit shared by jobs and the rating chunks they start.

A profile job goes on with its user's rating chunks in the worker's event loop once the
profile is built, instead of sending one message per chunk through the queue and reading the
profile back. The limit here keeps the calls the process has in flight at its Celery
concurrency, whoever makes them, and lets profile calls go first: a profile is a chain of
calls that its ratings wait for, so starting chains early and rating in the gaps finishes a
run soonest (the schedule the benchmark's ideal assumes).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from celery import signals

from lusifer.core.settings import get_settings
from lusifer.llm import ChatRequest

_concurrency: int | None = None


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _record_concurrency(sender: Any = None, **_: Any) -> None:
    # The worker's --concurrency is the number of calls it may keep in flight.
    global _concurrency
    value = getattr(sender, "concurrency", None)
    if isinstance(value, int) and value > 0:
        _concurrency = value


def concurrency() -> int:
    """Calls this process keeps in flight: the worker's concurrency, else the setting."""
    return _concurrency or get_settings().worker_concurrency


def max_held() -> int:
    """Rating jobs this process may hold beside those it runs (see ``worker_max_held``)."""
    setting = get_settings().worker_max_held
    return 4 * concurrency() if setting is None else setting


class PrioritySlots:
    """A counting semaphore of an event loop whose urgent waiters are served first.

    A released slot goes straight to the waiter who gets it, so a coroutine arriving between
    the release and the wake-up cannot take it past the queue.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._other: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool) -> None:
        """Take a slot, waiting while none is free (or while a waiter is ahead)."""
        ahead = self._urgent if urgent else (self._urgent or self._other)
        if self._free > 0 and not ahead:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._other
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as it was cancelled: pass it on
            else:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back, to the first urgent waiter, else the first other one."""
        for queue in (self._urgent, self._other):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1

    @asynccontextmanager
    async def hold(self, request: ChatRequest) -> AsyncIterator[None]:
        """A slot for the time of one call (cache lookup, budget check, call, record)."""
        await self.acquire(urgent=request.schema_name == "profile")
        try:
            yield
        finally:
            self.release()
