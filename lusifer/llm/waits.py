"""Waits that a warm shutdown cuts short.

A worker told to stop (SIGTERM: Celery's warm shutdown) finishes its running jobs before it
exits. A job asleep in a backoff, a server's ``Retry-After`` or a limiter pause would hold the
shutdown for as long as it sleeps (capped, but minutes); these sleeps wake up at once instead
and raise ``TransientLLMError``, which hands the job back to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import threading
import time

from lusifer.core.errors import TransientLLMError

_stopping = threading.Event()
# Granularity of an asyncio wait's look at the flag: a loop has no portable way to wait on a
# threading.Event without a thread of its own per sleeper.
_SLICE_S = 0.25


def stop_waiting() -> None:
    """Wake every wait of this process now and from now on (the worker shuts down)."""
    _stopping.set()


def resume_waiting() -> None:
    """Let waits sleep again (for tests, and a process that did not stop after all)."""
    _stopping.clear()


def _interrupted() -> TransientLLMError:
    return TransientLLMError("the worker is shutting down; the job goes back to the queue")


def sleep(seconds: float) -> None:
    """``time.sleep`` that a warm shutdown interrupts."""
    if _stopping.wait(max(0.0, seconds)):
        raise _interrupted()


async def async_sleep(seconds: float) -> None:
    """``asyncio.sleep`` that a warm shutdown interrupts."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        if _stopping.is_set():
            raise _interrupted()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, _SLICE_S))
