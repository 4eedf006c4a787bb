"""`bench sdk` compares like with like: the openai SDK, as the benchmark drives it, answers and
fails as ``AsyncOpenAICompatibleModel`` does, against the same stub server over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from bench.sdk_calls import CLIENTS, make_model, measure, rating_requests
from lusifer.core.errors import LLMError, PermanentLLMError, TransientLLMError
from lusifer.llm import ChatRequest, ChatResult
from lusifer.stub import StubConfig, StubServer


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig()) as server:
        yield server


def _complete(client: str, base_url: str, request: ChatRequest) -> ChatResult | LLMError:
    async def main() -> ChatResult | LLMError:
        model = make_model(client, base_url)
        try:
            return await model.complete(request)
        except LLMError as error:
            return error
        finally:
            await model.aclose()

    return asyncio.run(main())


def _same(result: ChatResult | LLMError) -> tuple[Any, ...]:
    if isinstance(result, LLMError):
        return (type(result), str(result), result.status)
    return (result.text, result.prompt_tokens, result.completion_tokens, result.cached_tokens)


def test_every_client_gives_the_same_answers_and_usage(stub: StubServer) -> None:
    [request] = rating_requests(1)  # asked twice: the second reuses the stub's cached prefix
    answers, bodies = {}, {}
    for client in CLIENTS:
        stub.reset()  # the stub forgets the prefixes it saw
        answers[client] = tuple(
            _same(_complete(client, stub.base_url, r)) for r in (request, request)
        )
        bodies[client] = tuple(e["body_sha256"] for e in stub.requests())
    assert len(set(answers.values())) == 1
    (text, prompt_tokens, completion_tokens, cached), (*_, cached_again) = answers["aiohttp"]
    assert text.count(":") == 40 and prompt_tokens > 0 and completion_tokens > 0
    assert cached == 0 and cached_again > 0
    # The SDK sends the very bodies the hand-written client sends.
    assert len(set(bodies.values())) == 1


@pytest.mark.parametrize("fault", ["500", "429"])
def test_every_client_maps_server_errors_alike(stub: StubServer, fault: str) -> None:
    stub.update(faults=[fault], fault_every_n=1)
    [request] = rating_requests(1)
    errors = [_complete(client, stub.base_url, request) for client in CLIENTS]
    assert all(isinstance(e, TransientLLMError) for e in errors)
    assert len({_same(e) for e in errors}) == 1
    # One attempt each: the SDK's own retries are off, ours are the only ones.
    assert len(stub.requests()) == len(CLIENTS)


def test_every_client_maps_an_unknown_model_alike(stub: StubServer) -> None:
    [request] = rating_requests(1)
    unknown = request.model_copy(update={"model": "no-such-model"})
    errors = [_complete(client, stub.base_url, unknown) for client in CLIENTS]
    assert all(isinstance(e, PermanentLLMError) for e in errors)
    assert len({_same(e) for e in errors}) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_a_measurement_counts_every_call(stub: StubServer, client: str) -> None:
    figures = asyncio.run(measure(client, stub.base_url, calls=30, in_flight=8))
    assert figures["calls"] == 30 and figures["cpu_s"] > 0 and figures["calls_per_s"] > 0
    chats = [e for e in stub.requests() if e["path"] == "/v1/chat/completions"]
    # The warm-up opened each of the 8 connections once, then the 30 measured calls.
    assert len(chats) == 8 + 30
    assert {e["status"] for e in chats} == {200}
