"""A warm shutdown cuts every wait short: backoffs, Retry-After and limiter pauses."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from lusifer.core.errors import TransientLLMError
from lusifer.llm.failures import transient_retries
from lusifer.llm.waits import async_sleep, resume_waiting, sleep, stop_waiting


@pytest.fixture(autouse=True)
def _waiting_again() -> Iterator[None]:
    resume_waiting()
    yield
    resume_waiting()


def _stop_in(seconds: float) -> None:
    threading.Timer(seconds, stop_waiting).start()


def test_a_blocking_sleep_wakes_at_shutdown() -> None:
    _stop_in(0.2)
    started = time.monotonic()
    with pytest.raises(TransientLLMError, match="shutting down"):
        sleep(300)
    assert time.monotonic() - started < 2


def test_an_asyncio_sleep_wakes_at_shutdown() -> None:
    _stop_in(0.2)
    started = time.monotonic()
    with pytest.raises(TransientLLMError, match="shutting down"):
        asyncio.run(async_sleep(300))
    assert time.monotonic() - started < 2


def test_sleeps_run_their_time_without_a_shutdown() -> None:
    started = time.monotonic()
    sleep(0.1)
    asyncio.run(async_sleep(0.1))
    assert time.monotonic() - started >= 0.2


def test_a_retry_backoff_is_cut_short() -> None:
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise TransientLLMError("LLM endpoint answered 429", retry_after=300)

    _stop_in(0.2)
    started = time.monotonic()
    with pytest.raises(TransientLLMError, match="shutting down"):
        for attempt in transient_retries(attempts=5, backoff_max_s=300):
            with attempt:
                failing()
    assert calls == 1 and time.monotonic() - started < 2
