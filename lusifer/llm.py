"""The LLM behind one small interface: a request that knows its cache key, and its result.

``OpenAICompatibleModel`` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp). Transient failures retry here with exponential backoff and jitter (honouring
``Retry-After``); permanent ones raise at once. ``FakeChatModel`` answers in-process for unit
tests.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import openai
import urllib3
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict
from tenacity import (
    BaseRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_random_exponential

from lusifer.config import StructuredOutput
from lusifer.errors import LLMError, PermanentLLMError, TransientLLMError
from lusifer.ratelimit import Grant, RateLimiter, estimate_tokens

T = TypeVar("T")
RetryingT = TypeVar("RetryingT", bound=BaseRetrying)


class ChatRequest(BaseModel):
    """Everything that decides an answer; its hash is the cache key of the call."""

    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    temperature: float = 0.0
    max_tokens: int | None = None
    schema_name: str | None = None
    json_schema: dict[str, Any] | None = None
    structured_output: StructuredOutput = "json_schema"
    sample_index: int = 0  # distinguishes repeated samples at temperature > 0

    def canonical_json(self) -> str:
        """The request as JSON with sorted keys: what its cache key is the hash of."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)

    def cache_key(self) -> str:
        """A content address of the call (sha256 of its canonical JSON)."""
        return key_of(self.canonical_json())


def key_of(canonical_json: str) -> str:
    """The cache key of a request's canonical JSON."""
    return hashlib.sha256(canonical_json.encode()).hexdigest()


class ChatResult(BaseModel):
    """The text of an answer and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0
    # Share of the configured prices this call is billed at (the Batch API charges less).
    price_factor: float = 1.0


class ChatModel(Protocol):
    """Anything that answers a chat request."""

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer one request (raises ``TransientLLMError`` or ``PermanentLLMError``)."""
        ...


def _response_format(request: ChatRequest) -> dict[str, Any] | None:
    if request.json_schema is None or request.structured_output == "none":
        return None
    if request.structured_output == "json_object":
        # llama.cpp's server turns this schema into a grammar.
        return {"type": "json_object", "schema": request.json_schema}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": request.schema_name or "answer",
            "schema": request.json_schema,
            "strict": True,
        },
    }


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for a request (online and in a batch).

    One function builds it so that an audit can tell which HTTP request was which call.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": r, "content": c} for r, c in request.messages],
        "temperature": request.temperature,
    }
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return body


def result_of(completion: ChatCompletion, latency_s: float = 0.0) -> ChatResult:
    """The text and token counts of a chat completion."""
    if not completion.choices:
        raise TransientLLMError("LLM endpoint returned no choices")
    usage = completion.usage
    cached = 0
    if usage is not None and usage.prompt_tokens_details is not None:
        cached = usage.prompt_tokens_details.cached_tokens or 0
    return ChatResult(
        text=completion.choices[0].message.content or "",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=cached,
        latency_s=latency_s,
    )


def result_of_json(body: Any) -> ChatResult:
    """The text and token counts of a chat completion's JSON body."""
    try:
        choices = body.get("choices") or []
        if not choices:
            raise TransientLLMError("LLM endpoint returned no choices")
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return ChatResult(
            text=choices[0].get("message", {}).get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )
    except (AttributeError, TypeError, IndexError):
        raise TransientLLMError("LLM endpoint answered a malformed chat completion") from None


def _error_message(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or text)
    except (ValueError, AttributeError):
        return text


def classify_status(
    status: int, retry_after: float | None, message: str, model: str, base_url: str
) -> TransientLLMError | PermanentLLMError:
    """Map an HTTP error status of an OpenAI-compatible endpoint onto Lusifer's errors."""
    if status == 429 or status >= 500:
        return TransientLLMError(f"LLM endpoint answered {status}", retry_after)
    if status in (401, 403):
        return PermanentLLMError(
            f"the LLM endpoint {base_url} rejected the API key ({status}); "
            "set LUSIFER_LLM_API_KEY (or OPENAI_API_KEY) to a valid key"
        )
    if status == 404:
        return PermanentLLMError(
            f"model {model!r} or its endpoint was not found at {base_url}; "
            "check --model and --base-url"
        )
    if status in (408, 409):
        return TransientLLMError(f"LLM endpoint answered {status}")
    return PermanentLLMError(
        f"the LLM endpoint refused the request ({status}: {_short(message)}); "
        "check the model's options (--structured-output none for servers without JSON schema)"
    )


def classify_openai_error(err: Exception, model: str, base_url: str) -> Exception:
    """Map an ``openai`` exception onto Lusifer's transient/permanent errors."""
    if isinstance(err, openai.APIConnectionError):  # APITimeoutError is one too
        return transport_error(base_url, timed_out=isinstance(err, openai.APITimeoutError))
    if isinstance(err, openai.APIStatusError):
        return classify_status(
            err.status_code, _retry_after(err.response), err.message, model, base_url
        )
    return err


def transport_error(base_url: str, *, timed_out: bool) -> TransientLLMError:
    """The error of a call that got no HTTP answer: it timed out, or never connected."""
    if timed_out:
        return TransientLLMError(f"LLM request to {base_url} timed out")
    return TransientLLMError(f"cannot connect to the LLM at {base_url}")


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _retry_after(response: Any) -> float | None:
    # The SDK's response type differs between openai releases; only the headers matter.
    return None if response is None else _number(response.headers.get("retry-after"))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _BackoffHonouringRetryAfter:
    """Exponential backoff with full jitter, but never shorter than the server's Retry-After."""

    def __init__(self, max_wait: float) -> None:
        self._jitter = wait_random_exponential(multiplier=0.5, max=max_wait)

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self._jitter(state))
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        if isinstance(err, TransientLLMError) and err.retry_after is not None:
            wait = max(wait, err.retry_after)
        return wait


def transient_retry_policy(kind: type[RetryingT], attempts: int, backoff_max_s: float) -> RetryingT:
    """A tenacity ``kind`` (``Retrying`` or ``AsyncRetrying``) that retries
    ``TransientLLMError`` with jittered backoff and ``Retry-After``, and reraises the last.

    The sync and the asyncio clients both build their retries here, so they cannot drift apart.
    """
    return kind(
        retry=retry_if_exception_type(TransientLLMError),
        wait=_BackoffHonouringRetryAfter(backoff_max_s),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )


def transient_retries(attempts: int, backoff_max_s: float) -> Retrying:
    """Retry ``TransientLLMError`` with jittered backoff and ``Retry-After``; reraise the last."""
    return transient_retry_policy(Retrying, attempts, backoff_max_s)


def chat_result_of_http(
    status: int, retry_after: str | None, data: bytes, model: str, base_url: str
) -> ChatResult:
    """The result of a raw ``POST /chat/completions`` answer, or its classified error.

    Shared by the sync and the asyncio clients: only their transports differ.
    """
    if status >= 400:
        error = classify_status(status, _number(retry_after), _error_message(data), model, base_url)
        error.status = status
        raise error
    try:
        return result_of_json(json.loads(data))
    except ValueError:
        raise TransientLLMError(
            f"the LLM at {base_url} answered with something other than JSON"
        ) from None


def limiter_tokens(request: ChatRequest) -> int:
    """The tokens a rate limiter reserves for a request before it is sent."""
    return estimate_tokens(sum(len(content) for _, content in request.messages), request.max_tokens)


def settle_failure(limiter: RateLimiter, grant: Grant, error: LLMError) -> None:
    """Book a failed call: it still counts as a request, but used no tokens; a 429 pauses
    every worker for the server's Retry-After, not only the caller."""
    limiter.settle(grant, 0)
    if error.status == 429:
        wait = error.retry_after if isinstance(error, TransientLLMError) else None
        limiter.pause(wait or 1.0)


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


class FakeChatModel:
    """An in-process chat model for unit tests: ``answer(request) -> text``."""

    def __init__(self, answer: Callable[[ChatRequest], str]) -> None:
        self._answer = answer
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer with the function's text; tokens are characters / 4."""
        self.requests.append(request)
        text = self._answer(request)
        prompt_chars = sum(len(content) for _, content in request.messages)
        return ChatResult(
            text=text, prompt_tokens=prompt_chars // 4 + 1, completion_tokens=len(text) // 4 + 1
        )
