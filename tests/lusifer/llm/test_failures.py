"""Waits a server asks for are capped: one absurd Retry-After cannot stop a run."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai
import pytest

from lusifer.core.errors import LLMError, PermanentLLMError, TransientLLMError
from lusifer.core.settings import get_settings
from lusifer.llm import chat_result_of_http, classify_openai_error, classify_status
from lusifer.llm.failures import capped_wait


@pytest.fixture(autouse=True)
def _cap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LUSIFER_MAX_WAIT_S", "120")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("asked", "waited"),
    [(None, None), (3.0, 3.0), (99999999.0, 120.0), (-4.0, None), (float("inf"), None)],
)
def test_capped_wait(asked: float | None, waited: float | None) -> None:
    assert capped_wait(asked) == waited


def test_a_429_with_a_retry_after_of_three_years_waits_the_cap() -> None:
    error = classify_status(429, 99999999.0, "slow down", "m", "http://x/v1")
    assert isinstance(error, TransientLLMError)
    assert error.retry_after == 120.0


@pytest.mark.parametrize("header", ["99999999", "86400", "soon", "-1", "nan"])
def test_raw_http_answers_obey_the_cap_whatever_the_header(header: str) -> None:
    with pytest.raises(TransientLLMError) as raised:
        chat_result_of_http(429, header, b'{"error": {"message": "x"}}', "m", "http://x/v1")
    assert raised.value.retry_after is None or 0 <= raised.value.retry_after <= 120.0


@pytest.mark.parametrize(
    ("error_class", "status", "kind"),
    [
        (openai.RateLimitError, 429, TransientLLMError),
        (openai.InternalServerError, 503, TransientLLMError),
        (openai.AuthenticationError, 401, PermanentLLMError),
    ],
)
def test_an_sdk_error_keeps_its_status_and_the_capped_wait(
    error_class: type[openai.APIStatusError], status: int, kind: type[Exception]
) -> None:
    # The status decides whether a failed call pauses the shared limiter (a 429 does).
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(status, headers={"retry-after": "99999999"}, request=request)
    error = classify_openai_error(
        error_class("no", response=response, body=None), "m", "http://x/v1"
    )
    assert isinstance(error, kind)
    assert isinstance(error, LLMError) and error.status == status
    if isinstance(error, TransientLLMError):
        assert error.retry_after == 120.0
