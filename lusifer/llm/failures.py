"""What a failed call means: transient or permanent, how long to wait, and how often to retry.

Transient failures retry with exponential backoff and jitter (honouring ``Retry-After``);
permanent ones raise at once with a message naming the fix.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    BaseRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_random_exponential

from lusifer.core.errors import LLMError, PermanentLLMError, TransientLLMError
from lusifer.core.redaction import redact
from lusifer.core.settings import get_settings
from lusifer.llm.ratelimit import Grant, RateLimiter
from lusifer.llm.request import ChatResult, result_of_json
from lusifer.llm.waits import async_sleep, sleep

log = logging.getLogger("lusifer.llm")
RetryingT = TypeVar("RetryingT", bound=BaseRetrying)


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
    """Map an HTTP error status of an OpenAI-compatible endpoint onto Lusifer's errors.

    The error keeps the status, whichever client got it: a 429 pauses the shared limiter.
    """
    error = _error_of_status(status, retry_after, message, model, base_url)
    error.status = status
    return error


def _error_of_status(
    status: int, retry_after: float | None, message: str, model: str, base_url: str
) -> TransientLLMError | PermanentLLMError:
    if status == 429 or status >= 500:
        return TransientLLMError(f"LLM endpoint answered {status}", capped_wait(retry_after))
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
        f"the LLM endpoint refused the request ({status}: {_short(redact(message))}); "
        "check the model's options (--structured-output none for servers without JSON schema)"
    )


def classify_openai_error(err: Exception, model: str, base_url: str) -> Exception:
    """Map an ``openai`` exception onto Lusifer's transient/permanent errors."""
    # Imported here: only a process that used the SDK (and so loaded it) gets its errors.
    import openai

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


def capped_wait(seconds: float | None) -> float | None:
    """A wait a server asked for, within ``LUSIFER_MAX_WAIT_S``; None for none or nonsense.

    A header is outside input: ``Retry-After: 99999999`` would otherwise sleep a job for
    three years and pause every worker's limiter as long.
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    cap = get_settings().max_wait_s
    if seconds > cap:
        log.warning(
            "the LLM server asked to wait %.0f s; waiting %.0f s (LUSIFER_MAX_WAIT_S)", seconds, cap
        )
        return cap
    return seconds


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
    # Sleeps a warm shutdown cuts short: a worker told to stop does not sit out a backoff.
    sleeper: Any = async_sleep if issubclass(kind, AsyncRetrying) else sleep
    return kind(
        retry=retry_if_exception_type(TransientLLMError),
        wait=_BackoffHonouringRetryAfter(backoff_max_s),
        stop=stop_after_attempt(attempts),
        reraise=True,
        sleep=sleeper,
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
        raise classify_status(status, _number(retry_after), _error_message(data), model, base_url)
    try:
        return result_of_json(json.loads(data))
    except ValueError:
        raise TransientLLMError(
            f"the LLM at {base_url} answered with something other than JSON"
        ) from None


def settle_failure(limiter: RateLimiter, grant: Grant, error: LLMError) -> None:
    """Book a failed call: it still counts as a request, but used no tokens; a 429 pauses
    every worker for the server's Retry-After, not only the caller."""
    limiter.settle(grant, 0)
    if error.status == 429:
        wait = error.retry_after if isinstance(error, TransientLLMError) else None
        limiter.pause(wait or 1.0)
