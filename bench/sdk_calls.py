"""One client's side of `bench sdk`: keep N calls in flight against a stub, print CPU and rate.

Run as its own process (`python -m bench.sdk_calls CLIENT BASE_URL ...`) so that the process
CPU time it reports is that client's alone: a worker process's share of a call, without the
stub's or the parent's. It prints one JSON line.

Clients:
- ``aiohttp``: ``AsyncOpenAICompatibleModel`` as the workers use it (lusifer/llm/async_client.py:
  a raw POST over an aiohttp session, the body and answer handled as plain JSON);
- ``sdk``: the same class with its transport replaced by ``AsyncOpenAI(http_client=
  DefaultAioHttpClient(), max_retries=0)`` and ``chat.completions.create``, the answer read
  from the SDK's typed ``ChatCompletion``; retries, limiter and error classes stay ours, so
  the difference measured is the transport and the SDK's request and response handling;
- ``sdk-post``: as ``sdk``, but the body goes through the SDK's generic ``post()`` rather than
  ``create()``, which skips the SDK's recursive transform of the parameters (the JSON schema
  of 40 items included): the SDK at its leanest, to tell what its cost is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from lusifer.llm import (
    AsyncOpenAICompatibleModel,
    ChatRequest,
    ChatResult,
    classify_openai_error,
    request_body,
    result_of,
)
from lusifer.method.schemas import rating_schema

CLIENTS = ("aiohttp", "sdk", "sdk-post")
ITEMS_PER_CALL = 40  # a rating chunk of the `lusifer` prompt set
_PROFILE = (
    "Enjoys drama and science fiction, prefers 1990s films, dislikes romance, and is a "
    "moderate rater. Recently rated: "
)


class SdkChatModel(AsyncOpenAICompatibleModel):
    """``AsyncOpenAICompatibleModel`` with the openai SDK (aiohttp transport) as its HTTP."""

    def __init__(
        self, base_url: str, api_key: str | None, *, lean: bool = False, **options: Any
    ) -> None:
        super().__init__(base_url, api_key, **options)
        self._lean = lean
        self._api_key = api_key or "not-needed"
        self._timeout_s = float(options.get("timeout_s", 120.0))
        self._sdk: openai.AsyncOpenAI | None = None

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self._timeout_s,
                max_retries=0,  # our retry policy is the only one
                http_client=openai.DefaultAioHttpClient(),
            )
        return self._sdk

    async def aclose(self) -> None:
        """Close the SDK client and its aiohttp session."""
        if self._sdk is not None:
            await self._sdk.close()
        self._sdk = None

    async def _post_chat(self, request: ChatRequest) -> ChatResult:
        body: dict[str, Any] = request_body(request)
        client = self._client()
        try:
            if self._lean:
                completion = await client.post(
                    "/chat/completions", body=body, cast_to=ChatCompletion
                )
            else:
                completion = await client.chat.completions.create(**body)
        except openai.OpenAIError as err:
            raise classify_openai_error(err, request.model, self.base_url) from None
        return result_of(completion)


def rating_requests(count: int, first: int = 0) -> Iterator[ChatRequest]:
    """Requests shaped like the `lusifer` prompt set's rating chunks, each one different."""
    for n in range(first, first + count):
        ids = [1 + (n * 7 + k) % 1682 for k in range(ITEMS_PER_CALL)]
        recent = "; ".join(f"movie {(n + k) % 1682}: {1 + k % 5}" for k in range(10))
        items = "\n".join(
            f'<item id="{i}">Movie number {i} (199{i % 10}) | Drama, Comedy</item>' for i in ids
        )
        yield ChatRequest(
            model="stub-model",
            messages=(
                ("system", f"You are user {n % 943}. {_PROFILE}{recent}."),
                ("user", f"Rate each item 1-5 as this user would. Answer in JSON.\n{items}"),
            ),
            max_tokens=12 * ITEMS_PER_CALL,
            schema_name="ratings",
            json_schema=rating_schema(ids),
        )


def make_model(client: str, base_url: str) -> AsyncOpenAICompatibleModel:
    """The client under test; one attempt, so a failure shows instead of hiding in retries."""
    options: dict[str, Any] = {"timeout_s": 60.0, "attempts": 1}
    if client.startswith("sdk"):
        return SdkChatModel(base_url, None, lean=client == "sdk-post", **options)
    return AsyncOpenAICompatibleModel(base_url, None, **options)


async def keep_in_flight(
    model: AsyncOpenAICompatibleModel, requests: list[ChatRequest], in_flight: int
) -> None:
    """Call every request with ``in_flight`` calls outstanding at all times."""
    pending = iter(requests)

    async def slot() -> None:
        for request in pending:
            await model.complete(request)

    await asyncio.gather(*(slot() for _ in range(in_flight)))


async def measure(client: str, base_url: str, calls: int, in_flight: int) -> dict[str, Any]:
    """Warm up (every connection opened once), then time ``calls`` calls."""
    model = make_model(client, base_url)
    warmup = list(rating_requests(in_flight, first=10**6))
    work = list(rating_requests(calls))
    try:
        await keep_in_flight(model, warmup, in_flight)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await keep_in_flight(model, work, in_flight)
        cpu_s = time.process_time() - cpu_before
        wall_s = time.perf_counter() - wall_before
    finally:
        await model.aclose()
    return {
        "client": client,
        "calls": calls,
        "in_flight": in_flight,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "cpu_ms_per_call": 1000 * cpu_s / calls,
        "calls_per_s": calls / wall_s,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure one client and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_calls")
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("base_url")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        figures = asyncio.run(measure(args.client, args.base_url, args.calls, args.in_flight))
    except Exception as err:  # the parent prints the line and stops; no traceback is useful
        print(f"{args.client}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
