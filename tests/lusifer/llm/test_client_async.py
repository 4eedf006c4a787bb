"""``AsyncOpenAICompatibleModel`` over real HTTP against the stub server, beside the sync client.

Each test drives its own event loop with ``asyncio.run`` (pytest-asyncio is not used).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
import redis

from lusifer.core.config import RateLimits
from lusifer.core.errors import LLMError, PermanentLLMError, TransientLLMError
from lusifer.llm import (
    AsyncChatModel,
    AsyncOpenAICompatibleModel,
    ChatRequest,
    OpenAICompatibleModel,
    request_body,
)
from lusifer.llm.ratelimit import RateLimiter
from lusifer.method.schemas import rating_schema
from lusifer.stub import StubConfig, StubServer
from lusifer.stub.answers import approx_tokens
from lusifer.stub.reply import body_sha256

MODEL = "stub-model"
SCHEMA = rating_schema([1, 2])
OPTIONS: dict[str, Any] = {"timeout_s": 10.0, "attempts": 3, "backoff_max_s": 0.05}
T = TypeVar("T")


def _request(**fields: Any) -> ChatRequest:
    base: dict[str, Any] = {
        "model": MODEL,
        "messages": (("system", "You are a viewer."), ("user", "Rate the items 1 and 2.")),
        "max_tokens": 40,
        "schema_name": "ratings",
        "json_schema": SCHEMA,
    }
    return ChatRequest(**{**base, **fields})


def _run(
    base_url: str,
    use: Callable[[AsyncOpenAICompatibleModel], Awaitable[T]],
    api_key: str | None = None,
    **options: Any,
) -> T:
    """``use(client)`` on a fresh event loop, with the client closed before the loop ends."""

    async def main() -> T:
        client = AsyncOpenAICompatibleModel(base_url, api_key, **{**OPTIONS, **options})
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _complete(
    base_url: str, request: ChatRequest, api_key: str | None = None, **options: Any
) -> Any:
    return _run(base_url, lambda client: client.complete(request), api_key, **options)


def _sync_error(base_url: str, request: ChatRequest, api_key: str | None = None) -> LLMError:
    """What the sync client raises for the same call."""
    with pytest.raises(LLMError) as info:
        OpenAICompatibleModel(base_url, api_key, **{**OPTIONS, "attempts": 1}).complete(request)
    return info.value


def _chat_entries(stub: StubServer) -> list[dict[str, Any]]:
    return [e for e in stub.requests() if e["path"] == "/v1/chat/completions"]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig()) as server:
        yield server


def test_it_is_an_async_chat_model() -> None:
    # mypy checks this assignment against the protocol.
    client: AsyncChatModel = AsyncOpenAICompatibleModel("http://127.0.0.1:1/v1", None)
    assert isinstance(client, AsyncOpenAICompatibleModel)


def test_success_returns_text_tokens_and_cached_tokens(stub: StubServer) -> None:
    # ~920 characters of system prompt: the stub reports its 256-character blocks seen before.
    profile = "You are user 7. Your profile: " + "likes long noir films. " * 40
    first = _request(messages=(("system", profile), ("user", "Rate the items 1 and 2.")))
    second = _request(messages=(("system", profile), ("user", "Rate the items 2 and 1.")))

    async def both(client: AsyncOpenAICompatibleModel) -> list[Any]:
        return [await client.complete(first), await client.complete(second)]

    one, two = _run(stub.base_url, both)
    assert set(json.loads(one.text)) == {"1", "2"}
    assert all(v in {1, 2, 3, 4, 5} for v in json.loads(one.text).values())
    prompt_chars = sum(len(content) for _, content in first.messages)
    assert one.prompt_tokens == approx_tokens("x" * prompt_chars) > 0
    assert one.completion_tokens == approx_tokens(one.text) > 0
    assert (one.cached_tokens, two.cached_tokens) == (0, 3 * 256 // 4)
    assert (one.retries, two.retries) == (0, 0)
    assert one.latency_s > 0 and two.latency_s > 0
    # The very body the sync client sends, so the stub's audit can tell which call was which.
    entries = _chat_entries(stub)
    assert [e["status"] for e in entries] == [200, 200]
    assert entries[0]["body_sha256"] == body_sha256(json.dumps(request_body(first)).encode())


def test_200_concurrent_calls_are_all_answered_and_overlap() -> None:
    with StubServer(StubConfig(latency_s=1.0)) as stub:
        requests = [_request(sample_index=i, temperature=0.7) for i in range(200)]

        async def all_at_once(client: AsyncOpenAICompatibleModel) -> list[Any]:
            return list(await asyncio.gather(*(client.complete(r) for r in requests)))

        started = time.monotonic()
        results = _run(stub.base_url, all_at_once)
        elapsed = time.monotonic() - started
        stats = stub.stats()
    assert len(results) == 200
    assert all(set(json.loads(r.text)) == {"1", "2"} and r.retries == 0 for r in results)
    assert stats["chat_requests"] == 200
    # Serialised they would take 200 s. aiohttp's default pool would hold at most 100 in
    # flight; the client's pool has no cap (a loaded machine may connect a little late).
    assert elapsed < 30
    assert stats["max_in_flight"] > 100


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_errors_are_retried_and_counted(stub: StubServer, fault: str) -> None:
    stub.update(faults=[fault], fault_every_n=2)

    async def two(client: AsyncOpenAICompatibleModel) -> list[Any]:
        return [await client.complete(_request()), await client.complete(_request())]

    first, second = _run(stub.base_url, two)
    assert (first.retries, second.retries) == (0, 1)
    assert set(json.loads(second.text)) == {"1", "2"}
    assert [e["status"] for e in _chat_entries(stub)] == [200, int(fault), 200]


def test_transient_errors_give_up_after_the_attempts(stub: StubServer) -> None:
    stub.update(faults=["500"], fault_every_n=1)
    with pytest.raises(TransientLLMError, match="500") as info:
        _complete(stub.base_url, _request(), attempts=2)
    assert info.value.status == 500
    assert [e["status"] for e in _chat_entries(stub)] == [500, 500]


def test_429_waits_out_retry_after(stub: StubServer) -> None:
    stub.update(faults=["429"], fault_every_n=1)
    with pytest.raises(TransientLLMError) as info:
        _complete(stub.base_url, _request(), attempts=1)
    assert info.value.status == 429
    assert info.value.retry_after == 1.0

    stub.reset()
    stub.update(faults=["429"], fault_every_n=2)

    async def two(client: AsyncOpenAICompatibleModel) -> tuple[Any, float]:
        await client.complete(_request())
        started = time.monotonic()
        result = await client.complete(_request())
        return result, time.monotonic() - started

    result, waited = _run(stub.base_url, two)
    assert result.retries == 1
    # The stub says Retry-After: 1; the client's own backoff is capped at 0.05 s.
    assert 0.95 <= waited < 8
    entries = _chat_entries(stub)
    assert [e["status"] for e in entries] == [200, 429, 200]
    assert entries[2]["ts"] - entries[1]["ts"] >= 0.95


def test_bad_key_is_permanent_with_the_sync_message() -> None:
    wrong = "sk-wrong-secret-0123456789"
    with StubServer(StubConfig(api_key="sk-right-key")) as server:
        started = time.monotonic()
        with pytest.raises(PermanentLLMError) as info:
            _complete(server.base_url, _request(), wrong, attempts=5)
        assert time.monotonic() - started < 2
        assert [e["status"] for e in server.requests()] == [401]
        sync = _sync_error(server.base_url, _request(), wrong)
        right = _complete(server.base_url, _request(), "sk-right-key")
    assert info.value.status == 401
    assert str(info.value) == str(sync)
    assert "LUSIFER_LLM_API_KEY" in str(info.value)
    assert "wrong-secret" not in str(info.value)
    assert set(json.loads(right.text)) == {"1", "2"}


def test_unknown_model_is_permanent_with_the_sync_message(stub: StubServer) -> None:
    request = _request(model="no-such-model")
    with pytest.raises(PermanentLLMError) as info:
        _complete(stub.base_url, request)
    assert info.value.status == 404
    assert len(_chat_entries(stub)) == 1
    assert str(info.value) == str(_sync_error(stub.base_url, request))
    assert "no-such-model" in str(info.value) and "--model" in str(info.value)


def test_a_dropped_connection_is_transient_and_retried(stub: StubServer) -> None:
    stub.update(faults=["reset"], fault_every_n=1)
    with pytest.raises(TransientLLMError) as info:
        _complete(stub.base_url, _request(), attempts=2)
    assert str(info.value) == f"cannot connect to the LLM at {stub.base_url}"
    assert [e["fault"] for e in _chat_entries(stub)] == ["reset", "reset"]


def test_a_slow_answer_times_out_as_transient(stub: StubServer) -> None:
    stub.update(faults=["timeout"], fault_every_n=1, timeout_sleep_s=3.0)
    started = time.monotonic()
    with pytest.raises(TransientLLMError) as info:
        _complete(stub.base_url, _request(), attempts=1, timeout_s=0.3)
    assert time.monotonic() - started < 2.5
    assert str(info.value) == f"LLM request to {stub.base_url} timed out"


# --- a server that is no OpenAI endpoint, and no server at all -----------------------------


class _Garbage(BaseHTTPRequestHandler):
    """Answers every POST 200 with an HTML page (a proxy's error page, say)."""

    protocol_version = "HTTP/1.1"
    seen: list[str | None]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("Content-Type"))
        data = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def garbage() -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Garbage,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_non_json_answer_is_transient_after_the_attempts(
    garbage: tuple[str, list[str | None]],
) -> None:
    base_url, seen = garbage
    with pytest.raises(TransientLLMError) as info:
        _complete(base_url, _request(), attempts=3)
    assert seen == ["application/json"] * 3
    assert str(info.value) == f"the LLM at {base_url} answered with something other than JSON"
    assert str(info.value) == str(_sync_error(base_url, _request()))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_transient_after_the_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    posts: list[ChatRequest] = []
    post = AsyncOpenAICompatibleModel._post_chat

    async def counting(self: AsyncOpenAICompatibleModel, request: ChatRequest) -> Any:
        posts.append(request)
        return await post(self, request)

    monkeypatch.setattr(AsyncOpenAICompatibleModel, "_post_chat", counting)
    with pytest.raises(TransientLLMError) as info:
        _complete(base_url, _request(), attempts=2)
    assert len(posts) == 2
    assert str(info.value) == f"cannot connect to the LLM at {base_url}"
    assert str(info.value) == str(_sync_error(base_url, _request()))


def test_one_loop_at_a_time(stub: StubServer) -> None:
    client = AsyncOpenAICompatibleModel(stub.base_url, None, **OPTIONS)
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(client.complete(_request())).retries == 0
        # The session belongs to the first loop until aclose(): another loop is refused.
        with pytest.raises(RuntimeError, match="second event loop"):
            asyncio.run(client.complete(_request()))
        first.run_until_complete(client.aclose())
    finally:
        first.close()

    async def again() -> Any:
        try:
            return await client.complete(_request())
        finally:
            await client.aclose()

    assert asyncio.run(again()).retries == 0  # closed, so a new loop may use it
    assert len(_chat_entries(stub)) == 2


# --- the shared rate limiter (real Redis, DB 11) -------------------------------------------


@pytest.fixture
def limiter() -> Iterator[RateLimiter]:
    connection = redis.Redis(host="127.0.0.1", port=6379, db=11)
    key = f"lusifer:test-llm-async:{secrets.token_hex(6)}"
    yield RateLimiter(connection, key, RateLimits(requests=5, window_s=1.0))
    for leftover in connection.scan_iter(f"{key}*"):
        connection.delete(leftover)
    connection.close()


@pytest.mark.integration
def test_the_rate_limiter_spaces_concurrent_calls(stub: StubServer, limiter: RateLimiter) -> None:
    async def twelve(client: AsyncOpenAICompatibleModel) -> list[Any]:
        return list(await asyncio.gather(*(client.complete(_request()) for _ in range(12))))

    started = time.monotonic()
    results = _run(stub.base_url, twelve, limiter=limiter)
    elapsed = time.monotonic() - started
    assert len(results) == 12
    # 5 a second: calls 1-5 at once, 6-10 a window later, 11-12 two windows later.
    assert elapsed >= 1.9
    times = sorted(e["ts"] for e in _chat_entries(stub))
    assert all(times[i + 5] - times[i] >= 0.9 for i in range(len(times) - 5))


@pytest.mark.integration
def test_a_429_pauses_the_rate_limiter(stub: StubServer, limiter: RateLimiter) -> None:
    stub.update(faults=["429"], fault_every_n=1)
    with pytest.raises(TransientLLMError):
        _complete(stub.base_url, _request(), attempts=1, limiter=limiter)
    grant, wait_s = limiter.try_acquire(1)
    # Paused for the server's Retry-After of 1 s, for every user of the limiter.
    assert grant is None
    assert 0.5 < wait_s <= 1.0
