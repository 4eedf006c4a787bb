"""The OpenAI-compatible client on an event loop: the asyncio twin of ``lusifer.llm.client``.

Only the transport (aiohttp rather than urllib3) and the waiting (on the loop rather than in a
thread) differ; the request body, the parsing, the error classes and the retry policy are the
blocking client's. aiohttp is imported when a model is made: the ``lusifer`` commands never
make one, and would pay its import at every start.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Protocol

from tenacity import AsyncRetrying

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.llm.failures import (
    chat_result_of_http,
    settle_failure,
    transient_retry_policy,
    transport_error,
)
from lusifer.llm.ratelimit import Grant, RateLimiter, jittered
from lusifer.llm.request import ChatRequest, ChatResult, limiter_tokens, request_body
from lusifer.llm.waits import async_sleep

if TYPE_CHECKING:
    import aiohttp


class AsyncChatModel(Protocol):
    """Anything that answers a chat request on an event loop."""

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer one request (raises ``TransientLLMError`` or ``PermanentLLMError``)."""
        ...


class AsyncOpenAICompatibleModel:
    """A chat model served over the OpenAI HTTP API, called from an event loop.

    One instance serves one event loop at a time: its HTTP session is made on first use in the
    running loop; ``aclose()`` it before that loop ends, after which another loop may use it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 120.0,
        attempts: int = 5,
        backoff_max_s: float = 30.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        import aiohttp  # here, not at the top: see the module docstring

        self.base_url = base_url
        self._chat_url = f"{base_url.rstrip('/')}/chat/completions"
        self._headers = {
            "Authorization": f"Bearer {api_key or 'not-needed'}",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._backoff_max_s = backoff_max_s
        self._limiter = limiter
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session(self) -> aiohttp.ClientSession:
        # Made here, not in __init__: a session belongs to the loop running when it is made,
        # and a model is often built before any loop runs.
        import aiohttp  # loaded by __init__

        loop = asyncio.get_running_loop()
        if self._http is None:
            # No connection limit (limit=0): the caller decides how many calls are in flight.
            # aiohttp's default of 100 would queue the rest silently, and the time queued
            # would count against each call's timeout. Idle connections are kept for reuse.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
            self._http = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
            self._loop = loop
        elif loop is not self._loop:
            # aiohttp would fail later with an obscure error, or hang, on a foreign loop.
            raise RuntimeError(
                "an AsyncOpenAICompatibleModel was used from a second event loop; "
                "aclose() it before its loop ends, or make one per loop"
            )
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP session and its connections (the model can be used again after)."""
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._loop = None

    async def complete(self, request: ChatRequest) -> ChatResult:
        """Answer a request, retrying transient failures with backoff (asleep on the loop)."""
        retries = transient_retry_policy(AsyncRetrying, self._attempts, self._backoff_max_s)
        async for attempt in retries:
            with attempt:
                result = await self._complete_once(request)
                result.retries = attempt.retry_state.attempt_number - 1
                return result
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _complete_once(self, request: ChatRequest) -> ChatResult:
        limiter = self._limiter
        grant = None if limiter is None else await _acquire(limiter, limiter_tokens(request))
        started = time.perf_counter()
        try:
            result = await self._post_chat(request)
        except (TransientLLMError, PermanentLLMError) as error:
            if limiter is not None and grant is not None:
                # The limiter talks to Redis through a blocking client: off the loop.
                await asyncio.to_thread(settle_failure, limiter, grant, error)
            raise
        result.latency_s = time.perf_counter() - started
        if limiter is not None and grant is not None:
            used = result.prompt_tokens + result.completion_tokens
            await asyncio.to_thread(limiter.settle, grant, used)
        return result

    async def _post_chat(self, request: ChatRequest) -> ChatResult:
        import aiohttp  # loaded by __init__

        body = json.dumps(request_body(request)).encode()
        try:
            async with self._session().post(self._chat_url, data=body) as response:
                data = await response.read()
        # aiohttp's timeouts are TimeoutErrors; some of them are ClientErrors as well.
        except (TimeoutError, aiohttp.ClientError) as err:
            timed_out = isinstance(err, TimeoutError)
            raise transport_error(self.base_url, timed_out=timed_out) from None
        return chat_result_of_http(
            response.status,
            response.headers.get("retry-after"),
            data,
            request.model,
            self.base_url,
        )


async def _acquire(limiter: RateLimiter, tokens: int) -> Grant:
    """A grant of the limiter, waited for on the loop.

    Not ``limiter.acquire`` in a thread: it sleeps in that thread for as long as the limit
    says (up to a whole window), and ``asyncio.to_thread``'s default pool has only
    min(32, CPUs + 4) threads, so a few dozen waiting calls would hold all of them and starve
    everything else sent to threads, the settles that give tokens back included. Here only
    each attempt's short Redis round trip takes a thread; the waiting is an ``asyncio.sleep``.
    """
    while True:
        grant, wait_s = await asyncio.to_thread(limiter.try_acquire, tokens)
        if grant is not None:
            return grant
        await async_sleep(jittered(wait_s))
