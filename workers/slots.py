"""Calls in flight per worker process: one limit shared by jobs and the rating chunks they start.

A profile job hands its user's rating chunks to a pool of threads once the profile is built,
instead of sending one message per chunk through the queue and reading the profile back. The
chunks of one user then run side by side; the limit here keeps the calls the process has in
flight at its Celery concurrency, whoever makes them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import signals

from lusifer.llm import ChatModel, ChatRequest, ChatResult
from lusifer.settings import get_settings

_lock = threading.Lock()
_concurrency: int | None = None
_slots: threading.BoundedSemaphore | None = None
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


def _semaphore() -> threading.BoundedSemaphore:
    global _slots
    with _lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(concurrency())
        return _slots


def chunk_pool() -> ThreadPoolExecutor:
    """Threads for rating chunks; as many as there are slots, so a chunk only waits for a slot."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=concurrency(), thread_name_prefix="chunk")
        return _pool


class SlotLimitedModel:
    """A ``ChatModel`` that holds one of the process's call slots while a call is in flight."""

    def __init__(self, model: ChatModel) -> None:
        self._model = model
        self._slots = _semaphore()

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer a request once a slot is free."""
        with self._slots:
            return self._model.complete(request)
