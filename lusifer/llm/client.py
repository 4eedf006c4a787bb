"""The OpenAI-compatible client, blocking; ``lusifer.llm.async_client`` is its asyncio twin, as
httpx keeps Client and AsyncClient.

``OpenAICompatibleModel`` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp) from a thread; ``AsyncOpenAICompatibleModel`` keeps many calls in flight on one event
loop (a worker process runs one loop rather than a thread per call: with 64-128 threads the GIL
handed itself around more than the threads did work). The request body, the parsing of the
answer, the error classes, the retry policy and the rate-limit bookkeeping are shared
(``lusifer.llm.request``, ``lusifer.llm.failures``); only the transport (urllib3 or aiohttp) and
the waiting (in a thread or on the loop) differ.

Chat calls do not go through the openai SDK: ``AsyncOpenAI`` over its own aiohttp transport
cost 5-6 times the CPU per call of the POST here at 128 calls in flight (``python -m bench
sdk``; README, "The HTTP client"). The SDK serves the Batch API and the model list, and is
imported when one of those is first used: importing it costs about a second of CPU, which every
``lusifer`` command and worker would otherwise pay at start-up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import urllib3

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.llm.failures import (
    chat_result_of_http,
    classify_openai_error,
    settle_failure,
    transient_retries,
    transport_error,
)
from lusifer.llm.ratelimit import RateLimiter
from lusifer.llm.request import ChatRequest, ChatResult, T, limiter_tokens, request_body

if TYPE_CHECKING:
    import openai


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
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._sdk: openai.OpenAI | None = None
        self._sdk_lock = threading.Lock()

    @property
    def _client(self) -> openai.OpenAI:
        """The SDK client, made (and the SDK imported) on first use."""
        # One client serves every thread of a worker (its HTTP pool is thread-safe); the lock
        # keeps threads that first ask together from making one each. The SDK's pool allows
        # 1000 connections (100 kept alive), far above a worker's 64 threads, so it does not
        # cap the calls in flight.
        with self._sdk_lock:
            if self._sdk is None:
                import openai

                # The SDK's own retries are off: retries here are counted and classified.
                self._sdk = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key or "not-needed",
                    timeout=self._timeout_s,
                    max_retries=0,
                )
            return self._sdk

    def _call(self, what: Callable[[], T]) -> T:
        """``what()`` with transient failures retried and SDK errors classified."""
        import openai  # loaded already: ``what`` uses ``self._client``

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
        client = self._client
        import openai  # loaded by ``self._client``

        try:
            return [m.id for m in client.models.list()]
        except openai.NotFoundError:
            return None
        except openai.OpenAIError as err:
            raise classify_openai_error(err, "?", self.base_url) from None
