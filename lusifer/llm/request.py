"""A chat request that knows its cache key, its result, and the interface every model meets.

The request body and the parsing of an answer are written once here, for the blocking and the
asyncio client, the Batch API lines and the stub's audit.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

from lusifer.core.config import StructuredOutput
from lusifer.core.errors import TransientLLMError
from lusifer.llm.ratelimit import estimate_tokens

if TYPE_CHECKING:
    # Only a type here: the SDK's types cost a second of start-up to every process.
    from openai.types.chat import ChatCompletion

T = TypeVar("T")


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


# The most tokens one call may report: the largest value a 32-bit database column holds.
MAX_TOKENS_REPORTED = 2**31 - 1


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

    # An answer is outside input, checked where it enters rather than where the database
    # refuses it: PostgreSQL stores no NUL character in text, and token counts go into 32-bit
    # columns (a server that reports ``completion_tokens: 10**15`` must not poison the job).
    @field_validator("text", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> str:
        if value is None:
            return ""
        text = value if isinstance(value, str) else str(value)
        return text.replace("\x00", "")

    @field_validator("prompt_tokens", "completion_tokens", "cached_tokens", mode="before")
    @classmethod
    def _token_count(cls, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0
        if value != value or value < 0:  # NaN or negative
            return 0
        return int(min(value, MAX_TOKENS_REPORTED))

    @field_validator("latency_s", mode="before")
    @classmethod
    def _latency(cls, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            return 0.0
        return float(min(value, 1e6))


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
            # Raw: the validators clamp nonsense (strings, floats, 10**15) to a sane count.
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )
    except (AttributeError, TypeError, IndexError):
        raise TransientLLMError("LLM endpoint answered a malformed chat completion") from None


def limiter_tokens(request: ChatRequest) -> int:
    """The tokens a rate limiter reserves for a request before it is sent."""
    return estimate_tokens(sum(len(content) for _, content in request.messages), request.max_tokens)
