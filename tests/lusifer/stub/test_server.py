"""The OpenAI-compatible stub server, exercised over real HTTP with the clients Lusifer uses."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from lusifer.stub import FAULT_KINDS, StubConfig, StubServer

KEY = "sk-stub-test-key-123"
MODEL = "stub-model"
REPO_ROOT = Path(__file__).resolve().parents[3]
# One client for the module: building an httpx client costs tens of milliseconds.
HTTP = httpx.Client(timeout=10)
SYSTEM = "You are a viewer. Your profile: loves noir, hates musicals."


def rating_schema(ids: list[str]) -> dict[str, Any]:
    props = {i: {"type": "integer", "minimum": 1, "maximum": 5} for i in ids}
    return {"type": "object", "properties": props, "required": ids, "additionalProperties": False}


PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"profile": {"type": "string"}, "change": {"type": "string"}},
    "required": ["profile", "change"],
    "additionalProperties": False,
}


def openai_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def messages(user: str, system: str = SYSTEM) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig(api_key=KEY)) as server:
        yield server


@pytest.fixture
def client(stub: StubServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=stub.base_url, api_key=KEY, max_retries=0, timeout=10)


def chat(client: openai.OpenAI, user: str, **kwargs: Any) -> str:
    response = client.chat.completions.create(model=MODEL, messages=messages(user), **kwargs)
    content = response.choices[0].message.content
    assert isinstance(content, str)
    return content


def post_chat(stub: StubServer, body: dict[str, Any], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return HTTP.post(f"{stub.base_url}/chat/completions", json=body, headers=headers)


# --- answers -------------------------------------------------------------------------------


def test_rating_schema_gets_exactly_its_keys_deterministically(client: openai.OpenAI) -> None:
    ids = ["50", "172", "3", "1001"]
    fmt = openai_format(rating_schema(ids))
    first = json.loads(chat(client, "Rate these.", response_format=fmt, temperature=0.7, seed=3))
    second = json.loads(chat(client, "Rate these.", response_format=fmt))
    assert list(first) == ids
    assert all(isinstance(v, int) and 1 <= v <= 5 for v in first.values())
    assert first == second
    # The documented rule: the system message (the user's profile) seeds every rating.
    assert first == {i: 1 + zlib.crc32(f"{SYSTEM}|{i}".encode()) % 5 for i in ids}


def test_completion_object_is_openai_shaped(stub: StubServer) -> None:
    body = {"model": MODEL, "messages": messages('<item id="9">A</item>'), "max_tokens": 50}
    data = post_chat(stub, body).json()
    assert data["object"] == "chat.completion" and data["model"] == MODEL
    assert data["id"].startswith("chatcmpl-") and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    prompt_chars = len(SYSTEM) + len('<item id="9">A</item>')
    usage = data["usage"]
    assert usage["prompt_tokens"] == -(-prompt_chars // 4)
    assert usage["completion_tokens"] == -(-len(content) // 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


def test_llama_cpp_schema_form_is_understood(client: openai.OpenAI) -> None:
    fmt = {"type": "json_object", "schema": rating_schema(["7", "8"])}
    assert set(json.loads(chat(client, "Rate.", response_format=fmt))) == {"7", "8"}


def test_profile_schema_gets_a_profile(client: openai.OpenAI) -> None:
    user = '<item id="1">Toy Story</item> rating: 5'
    answer = json.loads(chat(client, user, response_format=openai_format(PROFILE_SCHEMA)))
    assert set(answer) == {"profile", "change"}
    assert answer["profile"] and answer["change"].endswith(".")
    again = json.loads(chat(client, user, response_format=openai_format(PROFILE_SCHEMA)))
    assert again == answer


def test_profile_schema_with_refs_fills_every_required_string(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "$defs": {"Text": {"type": "string"}},
        "properties": {"profile": {"$ref": "#/$defs/Text"}, "mood": {"type": "string"}},
        "required": ["profile", "mood", "why"],
    }
    answer = json.loads(chat(client, "Write it.", response_format=openai_format(schema)))
    assert set(answer) == {"profile", "mood", "why"}
    assert all(isinstance(v, str) and v for v in answer.values())


def test_pydantic_generated_schemas_validate(client: openai.OpenAI) -> None:
    class Taste(BaseModel):
        summary: str

    class ProfileAnswer(BaseModel):
        profile: str
        change: str
        taste: Taste | None

    fmt = openai_format(ProfileAnswer.model_json_schema())
    answer = ProfileAnswer.model_validate_json(chat(client, "Write it.", response_format=fmt))
    assert answer.profile and answer.taste is not None and answer.taste.summary


def test_without_schema_the_item_tags_of_the_last_user_message_are_rated(
    client: openai.OpenAI,
) -> None:
    user = (
        '<item id="5">Seen before</item> rating: 4\n'  # context, already rated
        'Rate:\n<item id="50">Star Wars</item>\n<item id="181">Return of the Jedi</item>'
    )
    answer = json.loads(chat(client, user))
    assert list(answer) == ["50", "181"]
    assert all(1 <= v <= 5 for v in answer.values())


def test_without_schema_or_items_a_profile_is_written(client: openai.OpenAI) -> None:
    assert set(json.loads(chat(client, "Describe the viewer."))) == {"profile", "change"}


def test_a_reask_listing_ids_is_answered_with_those_ids(client: openai.OpenAI) -> None:
    user = "Answer again with a JSON object mapping these item ids to a rating 1-5: 50, 7."
    assert list(json.loads(chat(client, user))) == ["50", "7"]


# --- auth, models, routes ------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(stub: StubServer) -> None:
    body = {"model": MODEL, "messages": messages("hi")}
    for key in (None, "sk-wrong"):
        response = post_chat(stub, body, key=key)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=stub.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        chat(wrong, "hi")


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nope", messages=messages("hi"))
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "message": "The model `gpt-nope` does not exist",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


def test_models_are_listed() -> None:
    with StubServer(StubConfig(models=["a", "b"])) as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["a", "b"]
        raw = HTTP.get(f"{stub.base_url}/models").json()
        assert raw["object"] == "list" and raw["data"][0]["object"] == "model"


def test_bad_requests_are_400(stub: StubServer) -> None:
    assert post_chat(stub, {"model": MODEL}).status_code == 400
    response = HTTP.post(
        f"{stub.base_url}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 400
    assert (
        HTTP.get(f"{stub.base_url}/nowhere", headers={"Authorization": f"Bearer {KEY}"}).status_code
        == 404
    )


def test_latency_is_applied(client: openai.OpenAI, stub: StubServer) -> None:
    stub.update(latency_s=0.3)
    started = time.monotonic()
    chat(client, "hi")
    assert time.monotonic() - started >= 0.3


# --- faults --------------------------------------------------------------------------------

ITEMS_USER = "Rate:\n" + "\n".join(f'<item id="{i}">Movie {i}</item>' for i in range(10, 18))


def correct_and_faulted(stub: StubServer, client: openai.OpenAI, kind: str) -> tuple[str, str]:
    good = chat(client, ITEMS_USER)
    stub.update(fault_every_n=1, faults=[kind])
    return good, chat(client, ITEMS_USER)


@pytest.mark.parametrize(("kind", "status"), [("429", 429), ("500", 500), ("503", 503)])
def test_http_faults_answer_with_their_status(stub: StubServer, kind: str, status: int) -> None:
    stub.update(fault_every_n=1, faults=[kind])
    response = post_chat(stub, {"model": MODEL, "messages": messages("hi")})
    assert response.status_code == status
    assert "stub fault" in response.json()["error"]["message"]
    if kind == "429":
        assert response.headers["Retry-After"] == "1"
    assert stub.requests()[-1]["fault"] == kind


def test_429_surfaces_as_rate_limit_error(stub: StubServer, client: openai.OpenAI) -> None:
    stub.update(fault_every_n=1, faults=["429"])
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, "hi")
    assert caught.value.response.headers["retry-after"] == "1"


def test_reset_fault_is_a_connection_error(stub: StubServer, client: openai.OpenAI) -> None:
    stub.update(fault_every_n=1, faults=["reset"])
    with pytest.raises(openai.APIConnectionError):
        chat(client, "hi")
    assert stub.requests()[-1]["status"] is None


@pytest.mark.timeout(30)
def test_timeout_fault_makes_the_client_time_out(stub: StubServer) -> None:
    stub.update(fault_every_n=1, faults=["timeout"], timeout_sleep_s=5.0)
    client = openai.OpenAI(base_url=stub.base_url, api_key=KEY, max_retries=0, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        chat(client, "hi")
    assert time.monotonic() - started < 3.0


def test_truncated_fault_cuts_the_correct_json_in_half(
    stub: StubServer, client: openai.OpenAI
) -> None:
    good, bad = correct_and_faulted(stub, client, "truncated")
    assert bad == good[: len(good) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)


def test_prose_fault_wraps_the_correct_json(stub: StubServer, client: openai.OpenAI) -> None:
    good, bad = correct_and_faulted(stub, client, "prose")
    assert bad.startswith("Sure!") and bad.endswith("Hope this helps.")
    assert json.loads(bad[bad.index("{") : bad.rindex("}") + 1]) == json.loads(good)


def test_wrong_keys_fault_renames_one_and_drops_one(
    stub: StubServer, client: openai.OpenAI
) -> None:
    good, bad = (json.loads(t) for t in correct_and_faulted(stub, client, "wrong_keys"))
    assert len(set(good) - set(bad)) == 2 and len(set(bad) - set(good)) == 1
    assert len(bad) == len(good) - 1


def test_out_of_range_fault_has_a_7_and_a_0(stub: StubServer, client: openai.OpenAI) -> None:
    good, bad = (json.loads(t) for t in correct_and_faulted(stub, client, "out_of_range"))
    assert set(bad) == set(good)
    assert 7 in bad.values() and 0 in bad.values()


def test_non_integer_fault_has_a_3_5_and_a_word(stub: StubServer, client: openai.OpenAI) -> None:
    good, bad = (json.loads(t) for t in correct_and_faulted(stub, client, "non_integer"))
    assert set(bad) == set(good)
    assert 3.5 in bad.values() and "four" in bad.values()


def test_missing_keys_fault_drops_half(stub: StubServer, client: openai.OpenAI) -> None:
    good, bad = (json.loads(t) for t in correct_and_faulted(stub, client, "missing_keys"))
    assert set(bad) < set(good) and len(bad) == len(good) // 2
    assert all(bad[k] == good[k] for k in bad)


def test_every_n_cycles_through_the_kinds(stub: StubServer) -> None:
    stub.update(fault_every_n=2, faults=["500", "503"])
    body = {"model": MODEL, "messages": messages("hi")}
    assert [post_chat(stub, body).status_code for _ in range(6)] == [200, 500, 200, 503, 200, 500]


def test_fault_rate_draws_are_reproducible_from_the_seed() -> None:
    def fault_sequence() -> list[str | None]:
        config = StubConfig(fault_rate=0.5, fault_seed=42, faults=["500", "prose", "503"])
        with StubServer(config) as stub:
            body = {"model": MODEL, "messages": messages("hi")}
            for _ in range(30):
                post_chat(stub, body)
            return [entry["fault"] for entry in stub.requests()]

    first = fault_sequence()
    assert first == fault_sequence()
    assert 5 < sum(f is not None for f in first) < 25


def test_faults_default_to_every_kind() -> None:
    assert StubConfig().faults == list(FAULT_KINDS) and len(FAULT_KINDS) == 11


# --- request log and control routes -------------------------------------------------------


def test_request_log_hashes_bodies_and_never_keeps_the_key(stub: StubServer) -> None:
    body = {"messages": messages("hi"), "model": MODEL, "temperature": 0.0}
    post_chat(stub, body)
    post_chat(stub, body, key=None)
    log = stub.requests()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert [e["body_sha256"] for e in log] == [hashlib.sha256(canonical.encode()).hexdigest()] * 2
    assert [(e["status"], e["auth"], e["fault"]) for e in log] == [
        (200, True, None),
        (401, False, None),
    ]
    assert all(e["path"] == "/v1/chat/completions" and e["ts"] > 0 for e in log)
    served = HTTP.get(f"{stub.url}/_stub/requests").text
    config = HTTP.get(f"{stub.url}/_stub/config").text
    for text in (json.dumps(log), served, config, repr(stub.config)):
        assert KEY not in text

    # Whether an answer reached its client is noted after it is written: a log read at once may
    # not have that mark yet, the one read later does.
    def settled(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in e.items() if k != "delivered"} for e in entries]

    assert settled(json.loads(served)) == settled(log)
    assert stub.chat_request_count() == 2


def test_the_log_says_whether_an_answer_reached_its_client(stub: StubServer) -> None:
    body = {"messages": messages("hi"), "model": MODEL}
    post_chat(stub, body)
    stub.update(latency_s=1.0)
    # A client that gives up while the answer is delayed (a timeout, or a killed worker).
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{stub.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.2,
        )
    deadline = time.monotonic() + 5
    while stub.requests()[-1]["delivered"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(e["status"], e["delivered"]) for e in stub.requests()] == [(200, True), (200, False)]


def test_reset_and_config_over_http(stub: StubServer) -> None:
    post_chat(stub, {"model": MODEL, "messages": messages("hi")})
    assert HTTP.post(f"{stub.url}/_stub/reset").json() == {"ok": True}
    assert stub.requests() == [] and stub.chat_request_count() == 0
    update = {"fault_every_n": 1, "faults": ["503"]}
    new = HTTP.post(f"{stub.url}/_stub/config", json=update).json()
    assert new["faults"] == ["503"] and new["api_key_set"] is True
    assert post_chat(stub, {"model": MODEL, "messages": messages("hi")}).status_code == 503
    rejected = HTTP.post(f"{stub.url}/_stub/config", json={"fault_rate": 2})
    assert rejected.status_code == 400
    assert HTTP.post(f"{stub.url}/_stub/config", json={"nonsense": 1}).status_code == 400
    stub.reset()
    assert stub.requests() == []


# --- concurrency and the command line -----------------------------------------------------


def test_64_concurrent_requests_overlap_their_latency() -> None:
    with StubServer(StubConfig(latency_s=0.5)) as stub:
        body = {"model": MODEL, "messages": messages('<item id="1">A</item>')}
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        with httpx.Client(limits=limits, timeout=30) as http, ThreadPoolExecutor(64) as pool:
            url = f"{stub.base_url}/chat/completions"
            started = time.monotonic()
            statuses = list(pool.map(lambda _: http.post(url, json=body).status_code, range(64)))
            elapsed = time.monotonic() - started
        assert statuses == [200] * 64
        assert stub.chat_request_count() == 64
        # Serialised they would take 32 s; overlapping, a little over 0.5 s on a quiet machine.
        # The bound is loose on purpose: a loaded CI machine must not fail a test of overlap.
        assert 0.5 <= elapsed < 10.0
        stats = HTTP.get(f"{stub.url}/_stub/stats").json()
    # The stub counts what its clients held in flight at once.
    assert stats == {"in_flight": 0, "max_in_flight": 64, "chat_requests": 64}


def test_a_repeated_prompt_prefix_is_reported_as_cached_tokens(stub: StubServer) -> None:
    static = "You are user 7. Your profile: " + "likes long noir films. " * 40  # ~920 chars
    first = {"model": MODEL, "messages": messages('<item id="1">A</item>', static)}
    second = {"model": MODEL, "messages": messages('<item id="2">B</item>', static)}
    other = {"model": MODEL, "messages": messages('<item id="2">B</item>', "x" + static)}
    usages = [post_chat(stub, body).json()["usage"] for body in (first, second, other)]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
    # Nothing was seen before the first; the second reuses the whole 256-character blocks of
    # the shared system prompt (3 blocks = 768 characters = 192 tokens); a prompt differing in
    # its first character reuses nothing.
    assert cached == [0, 192, 0]
    assert all(u["prompt_tokens"] > c for u, c in zip(usages, cached, strict=True))


@pytest.mark.timeout(60)
def test_module_entry_point_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "lusifer.stub", "--port", "0", "--latency", "0.01"]
    command += ["--fault-rate", "0", "--api-key", KEY, "--models", "a,b"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=10)
        assert [m.id for m in client.models.list()] == ["a", "b"]
        reply = client.chat.completions.create(model="b", messages=messages("Describe."))
        assert "profile" in json.loads(reply.choices[0].message.content or "{}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
