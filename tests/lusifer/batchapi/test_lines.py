"""Batch request lines: built from chat requests, split under the limits, parsed back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lusifer.batchapi.lines import (
    CHAT_ENDPOINT,
    LineAnswer,
    LineError,
    parse_file,
    parse_line,
    request_line,
    split_lines,
)
from lusifer.llm import ChatRequest, request_body

REQUEST = ChatRequest(
    model="gpt-4o-mini",
    messages=(("system", "You are a viewer."), ("user", 'Rate <item id="7">Heat</item>')),
    max_tokens=40,
    schema_name="ratings",
    json_schema={"type": "object", "properties": {"7": {"type": "integer"}}},
)


def completion(text: str, prompt: int = 30, out: int = 5, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def test_a_line_carries_the_cache_key_and_the_online_body() -> None:
    line = request_line(REQUEST)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = json.loads(line)
    assert data == {
        "custom_id": REQUEST.cache_key(),
        "method": "POST",
        "url": CHAT_ENDPOINT,
        "body": request_body(REQUEST),
    }
    assert data["body"]["response_format"]["json_schema"]["name"] == "ratings"
    assert data["body"]["max_tokens"] == 40


def test_non_ascii_text_stays_one_line() -> None:
    request = REQUEST.model_copy(update={"messages": (("user", "Amélie\nLéon"),)})
    line = request_line(request)
    assert line.count(b"\n") == 1
    assert json.loads(line)["body"]["messages"][0]["content"] == "Amélie\nLéon"


def test_split_respects_the_line_limit_and_keeps_order() -> None:
    lines = [f"{i}\n".encode() for i in range(7)]
    parts = split_lines(lines, max_lines=3, max_bytes=10_000)
    assert [len(p) for p in parts] == [3, 3, 1]
    assert [line for part in parts for line in part] == lines


def test_split_respects_the_byte_limit() -> None:
    lines = [b"x" * 40 + b"\n"] * 5  # 41 bytes each
    parts = split_lines(lines, max_lines=100, max_bytes=100)
    assert [len(p) for p in parts] == [2, 2, 1]
    assert all(sum(map(len, part)) <= 100 for part in parts)


def test_split_of_nothing_is_nothing() -> None:
    assert split_lines([], 10, 100) == []


def test_a_line_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="over the 10 limit"):
        split_lines([b"x" * 20], max_lines=5, max_bytes=10)


def test_a_200_line_is_an_answer_with_its_tokens() -> None:
    parsed = parse_line(
        {
            "id": "batch_req_1",
            "custom_id": "k1",
            "response": {"status_code": 200, "body": completion('{"7": 4}', 30, 5, 12)},
            "error": None,
        }
    )
    assert isinstance(parsed, LineAnswer)
    assert parsed.custom_id == "k1"
    assert parsed.result.text == '{"7": 4}'
    assert (parsed.result.prompt_tokens, parsed.result.completion_tokens) == (30, 5)
    assert parsed.result.cached_tokens == 12


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (500, True), (503, True), (400, False), (404, False)]
)
def test_error_lines_are_transient_or_permanent_by_status(status: int, transient: bool) -> None:
    body = {"error": {"message": f"failed with {status}", "code": None}}
    parsed = parse_line(
        {"custom_id": "k2", "response": {"status_code": status, "body": body}, "error": None}
    )
    assert parsed == LineError("k2", status, f"failed with {status}", transient)


def test_a_line_without_response_is_transient() -> None:
    parsed = parse_line(
        {"custom_id": "k3", "response": None, "error": {"code": "batch_expired", "message": ""}}
    )
    assert parsed == LineError("k3", None, "batch_expired", True)


def test_a_200_line_without_choices_is_transient() -> None:
    body = completion("x")
    body["choices"] = []
    parsed = parse_line({"custom_id": "k4", "response": {"status_code": 200, "body": body}})
    assert isinstance(parsed, LineError) and parsed.transient


def test_a_file_parses_every_nonblank_line() -> None:
    text = "\n".join(
        [
            json.dumps(
                {"custom_id": "a", "response": {"status_code": 200, "body": completion("1")}}
            ),
            "",
            json.dumps({"custom_id": "b", "response": {"status_code": 500, "body": {}}}),
        ]
    )
    parsed = list(parse_file(text))
    assert [type(p) for p in parsed] == [LineAnswer, LineError]
    assert [p.custom_id for p in parsed] == ["a", "b"]


def test_a_file_with_a_broken_line_names_it() -> None:
    with pytest.raises(ValueError, match="line 2"):
        list(parse_file('{"custom_id": "a"}\n{oops'))
