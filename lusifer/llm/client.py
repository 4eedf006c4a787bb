"""The OpenAI-compatible client, blocking and asyncio, as httpx keeps Client and AsyncClient.

``OpenAICompatibleModel`` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp) from a thread; ``AsyncOpenAICompatibleModel`` keeps many calls in flight on one event
loop (a worker process runs one loop rather than a thread per call: with 64-128 threads the GIL
handed itself around more than the threads did work). The request body, the parsing of the
answer, the error classes, the retry policy and the rate-limit bookkeeping are shared
(``lusifer.llm.request``, ``lusifer.llm.failures``); only the transport (urllib3 or aiohttp) and
the waiting (in a thread or on the loop) differ.

Chat calls do not go through the openai SDK: ``AsyncOpenAI`` over its own aiohttp transport
cost 5-6 times the CPU per call of the POST here at 128 calls in flight (``python -m bench
sdk``; README, "The HTTP client"). The SDK serves the Batch API and the model list.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
import openai
import urllib3
from tenacity import (
    AsyncRetrying,
)

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.llm.failures import (
    chat_result_of_http,
    classify_openai_error,
    settle_failure,
    transient_retries,
    transient_retry_policy,
    transport_error,
)
from lusifer.llm.ratelimit import Grant, RateLimiter, jittered
from lusifer.llm.request import ChatRequest, ChatResult, T, limiter_tokens, request_body
from lusifer.llm.waits import async_sleep


class OpenAIEndpoint:
    """An OpenAI-compatible endpoint: one SDK client, with Lusifer's retries and error classes."""

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
        self.base_url = base_url
        self._limiter = limiter
        self._attempts = attempts
        self._backoff_max_s = backoff_max_s
        # One client serves every thread of a worker (its HTTP pool is thread-safe). The SDK's
        # pool allows 1000 connections (100 kept alive), far above a worker's 64 threads, so
        # it does not cap the calls in flight.
        # The SDK's own retries are off: retries here are counted and classified.
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=0,
        )

    def _call(self, what: Callable[[], T]) -> T:
        """``what()`` with transient failures retried and SDK errors classified."""
        for attempt in transient_retries(self._attempts, self._backoff_max_s):
            with attempt:
                try:
                    return what()
                except openai.OpenAIError as err:
                    raise classify_openai_error(err, "?", self.base_url) from None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


class OpenAICompatibleModel(OpenAIEndpoint):
    """A chat model served over the OpenAI HTTP API."""

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
        super().__init__(
            base_url,
            api_key,
            timeout_s=timeout_s,
            attempts=attempts,
            backoff_max_s=backoff_max_s,
            limiter=limiter,
        )
        # Chat calls go straight through urllib3 (see ``_post_chat``). Its pool hands out
        # connections from a queue; httpx's pool re-scans every waiting request under one
        # lock at each request's start and end, and 128 threads of a worker spent more time
        # queueing on that lock than waiting for the LLM.
        self._chat_url = f"{base_url.rstrip('/')}/chat/completions"
        self._http = urllib3.PoolManager(
            maxsize=1024,
            timeout=urllib3.Timeout(total=timeout_s),
            retries=False,
            headers={
                "Authorization": f"Bearer {api_key or 'not-needed'}",
                "Content-Type": "application/json",
            },
        )

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer a request, retrying transient failures with backoff."""
        for attempt in transient_retries(self._attempts, self._backoff_max_s):
            with attempt:
                result = self._complete_once(request)
                result.retries = attempt.retry_state.attempt_number - 1
                return result
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _complete_once(self, request: ChatRequest) -> ChatResult:
        grant = None
        if self._limiter is not None:
            grant = self._limiter.acquire(limiter_tokens(request))
        started = time.perf_counter()
        try:
            result = self._post_chat(request)
        except (TransientLLMError, PermanentLLMError) as error:
            if self._limiter is not None and grant is not None:
                settle_failure(self._limiter, grant, error)
            raise
        result.latency_s = time.perf_counter() - started
        if self._limiter is not None and grant is not None:
            self._limiter.settle(grant, result.prompt_tokens + result.completion_tokens)
        return result

    def _post_chat(self, request: ChatRequest) -> ChatResult:
        # A plain POST: the SDK's request building and response models cost a third of a
        # worker's CPU per call, for a body that is plain JSON both ways.
        try:
            response = self._http.request(
                "POST", self._chat_url, body=json.dumps(request_body(request)).encode()
            )
        except urllib3.exceptions.HTTPError as err:
            # urllib3 makes a refused connection a ConnectTimeoutError too, for history's sake;
            # nothing timed out there.
            timed_out = isinstance(err, urllib3.exceptions.TimeoutError) and not isinstance(
                err, urllib3.exceptions.NewConnectionError
            )
            raise transport_error(self.base_url, timed_out=timed_out) from None
        return chat_result_of_http(
            response.status,
            response.headers.get("retry-after"),
            response.data,
            request.model,
            self.base_url,
        )

    def list_models(self) -> list[str] | None:
        """Model ids the endpoint serves, or None when it has no model list (a preflight)."""
        try:
            return [m.id for m in self._client.models.list()]
        except openai.NotFoundError:
            return None
        except openai.OpenAIError as err:
            raise classify_openai_error(err, "?", self.base_url) from None


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
