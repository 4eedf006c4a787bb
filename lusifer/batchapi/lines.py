"""Batch request lines (JSONL) built from chat requests, split under the API's limits, and
the output and error file lines parsed back into answers or errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from lusifer.core.errors import TransientLLMError
from lusifer.llm import ChatRequest, ChatResult, request_body, result_of

CHAT_ENDPOINT: Final = "/v1/chat/completions"


def request_line(request: ChatRequest) -> bytes:
    """One JSONL line (with its newline) asking for ``request``; ``custom_id`` is its cache key."""
    line = {
        "custom_id": request.cache_key(),
        "method": "POST",
        "url": CHAT_ENDPOINT,
        "body": request_body(request),
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def split_lines(lines: Sequence[bytes], max_lines: int, max_bytes: int) -> list[list[bytes]]:
    """Cut lines into files of at most ``max_lines`` lines and ``max_bytes`` bytes, in order."""
    parts: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"one request line is {len(line)} bytes, over the {max_bytes} limit")
        if current and (len(current) >= max_lines or size + len(line) > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        parts.append(current)
    return parts


@dataclass(frozen=True)
class LineAnswer:
    """A line answered with a chat completion."""

    custom_id: str
    result: ChatResult


@dataclass(frozen=True)
class LineError:
    """A line that failed; ``transient`` ones are worth submitting again."""

    custom_id: str
    status_code: int | None
    message: str
    transient: bool


def _is_transient(status: int | None) -> bool:
    # No status: the line never reached the model (batch expired, cancelled, internal error).
    return status is None or status in (408, 409, 429) or status >= 500


def parse_line(data: dict[str, Any]) -> LineAnswer | LineError:
    """One object of an output or error file as an answer or an error."""
    custom_id = str(data.get("custom_id") or "")
    response = data.get("response") or {}
    error = data.get("error") or {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        # Imported here: the SDK's types cost a second of start-up to every process, and
        # only a coordinator reading a finished batch needs them.
        from openai.types.chat import ChatCompletion

        try:
            return LineAnswer(custom_id, result_of(ChatCompletion.model_validate(body)))
        except (ValidationError, TransientLLMError) as err:
            message = " ".join(str(err).split())[:300]
            return LineError(custom_id, status, f"malformed completion: {message}", True)
    inner = body.get("error") if isinstance(body, dict) else None
    detail = inner if isinstance(inner, dict) else error
    message = str(detail.get("message") or detail.get("code") or "no error message")
    status = int(status) if isinstance(status, int) else None
    return LineError(custom_id, status, message, _is_transient(status))


def parse_file(text: str) -> Iterable[LineAnswer | LineError]:
    """Every line of an output or error file (blank lines skipped)."""
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            raise ValueError(f"line {number} of a batch result file is not JSON") from None
        if isinstance(data, dict):
            yield parse_line(data)
