"""Answers are outside input: cleaned and clamped where they enter, not where PostgreSQL
refuses them."""

from __future__ import annotations

import pytest

from lusifer.core.errors import TransientLLMError
from lusifer.llm import ChatResult, result_of_json
from lusifer.llm.request import MAX_TOKENS_REPORTED


def _body(content: object, usage: object) -> dict[str, object]:
    return {"choices": [{"message": {"content": content}}], "usage": usage}


def test_a_nul_byte_in_an_answer_is_dropped() -> None:
    result = result_of_json(_body('{"profile": "likes\u0000 noir"}', {}))
    assert result.text == '{"profile": "likes noir"}'


@pytest.mark.parametrize(
    ("reported", "stored"),
    [
        (10**15, MAX_TOKENS_REPORTED),
        (-5, 0),
        ("many", 0),
        (None, 0),
        (12.7, 12),
        (float("nan"), 0),
        (True, 0),
    ],
)
def test_absurd_token_counts_are_clamped_to_what_a_column_holds(
    reported: object, stored: int
) -> None:
    usage = {
        "prompt_tokens": reported,
        "completion_tokens": reported,
        "prompt_tokens_details": {"cached_tokens": reported},
    }
    result = result_of_json(_body("ok", usage))
    assert (result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (
        stored,
        stored,
        stored,
    )


def test_content_of_the_wrong_type_becomes_text_the_schema_then_rejects() -> None:
    assert result_of_json(_body(5, {})).text == "5"
    assert result_of_json(_body(None, {})).text == ""


def test_a_body_without_choices_is_a_transient_error() -> None:
    with pytest.raises(TransientLLMError):
        result_of_json({"choices": []})
    with pytest.raises(TransientLLMError):
        result_of_json(["not", "a", "completion"])


def test_latency_is_clamped() -> None:
    assert ChatResult(text="x", latency_s=float("inf")).latency_s == 1e6
    assert ChatResult(text="x", latency_s=-1).latency_s == 0.0
