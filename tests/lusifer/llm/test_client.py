"""``OpenAICompatibleModel`` over real HTTP, against the stub server and a recording server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.llm import ChatRequest, OpenAICompatibleModel
from lusifer.method.schemas import rating_schema
from lusifer.stub import StubConfig, StubServer
from lusifer.stub.answers import approx_tokens

MODEL = "stub-model"
SCHEMA = rating_schema([1, 2])


def _request(**fields: Any) -> ChatRequest:
    base: dict[str, Any] = {
        "model": MODEL,
        "messages": (("system", "You are a viewer."), ("user", "Rate the items 1 and 2.")),
        "max_tokens": 40,
        "schema_name": "ratings",
        "json_schema": SCHEMA,
    }
    return ChatRequest(**{**base, **fields})


def _client(base_url: str, api_key: str | None = None, **kwargs: Any) -> OpenAICompatibleModel:
    options: dict[str, Any] = {"timeout_s": 10.0, "attempts": 3, "backoff_max_s": 0.05}
    return OpenAICompatibleModel(base_url, api_key, **{**options, **kwargs})


def _chat_entries(stub: StubServer) -> list[dict[str, Any]]:
    return [e for e in stub.requests() if e["path"] == "/v1/chat/completions"]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig()) as server:
        yield server


def test_success_returns_text_and_tokens(stub: StubServer) -> None:
    request = _request()
    result = _client(stub.base_url).complete(request)
    answer = json.loads(result.text)
    assert set(answer) == {"1", "2"}
    assert all(v in {1, 2, 3, 4, 5} for v in answer.values())
    # The stub bills ceil(characters / 4) for the prompt (all messages) and the answer.
    prompt_chars = sum(len(content) for _, content in request.messages)
    assert result.prompt_tokens == approx_tokens("x" * prompt_chars) > 0
    assert result.completion_tokens == approx_tokens(result.text) > 0
    assert result.retries == 0
    assert result.latency_s > 0
    assert len(_chat_entries(stub)) == 1


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_errors_are_retried(stub: StubServer, fault: str) -> None:
    stub.update(faults=[fault], fault_every_n=2)
    client = _client(stub.base_url)
    assert client.complete(_request()).retries == 0  # request 1: fine
    result = client.complete(_request())  # request 2: fault, request 3: fine
    assert result.retries == 1
    assert set(json.loads(result.text)) == {"1", "2"}
    assert [e["status"] for e in _chat_entries(stub)] == [200, int(fault), 200]


def test_429_is_retried_after_retry_after(stub: StubServer) -> None:
    stub.update(faults=["429"], fault_every_n=2)
    client = _client(stub.base_url)
    client.complete(_request())
    started = time.monotonic()
    result = client.complete(_request())
    waited = time.monotonic() - started
    assert result.retries == 1
    # The stub says Retry-After: 1; the client's own backoff is capped at 0.05 s.
    assert waited >= 0.95
    assert waited < 8
    entries = _chat_entries(stub)
    assert [e["status"] for e in entries] == [200, 429, 200]
    assert entries[2]["ts"] - entries[1]["ts"] >= 0.95


def test_transient_errors_give_up_after_the_attempts(stub: StubServer) -> None:
    stub.update(faults=["500"], fault_every_n=1)
    with pytest.raises(TransientLLMError, match="500"):
        _client(stub.base_url, attempts=2).complete(_request())
    assert [e["status"] for e in _chat_entries(stub)] == [500, 500]


def test_bad_key_fails_at_once_without_showing_the_key() -> None:
    wrong = "sk-wrong-secret-0123456789"
    with StubServer(StubConfig(api_key="sk-right-key")) as server:
        client = _client(server.base_url, wrong, attempts=5)
        started = time.monotonic()
        with pytest.raises(PermanentLLMError) as info:
            client.complete(_request())
        assert time.monotonic() - started < 2
        log = server.requests()
    assert len(log) == 1
    assert log[0]["status"] == 401
    message = str(info.value)
    assert "API key" in message
    assert "LUSIFER_LLM_API_KEY" in message
    assert wrong not in message
    assert "wrong-secret" not in message
    assert "\n" not in message


def test_right_key_is_accepted() -> None:
    with StubServer(StubConfig(api_key="sk-right-key")) as server:
        result = _client(server.base_url, "sk-right-key").complete(_request())
        assert set(json.loads(result.text)) == {"1", "2"}


def test_unknown_model_is_permanent_and_names_the_flag(stub: StubServer) -> None:
    with pytest.raises(PermanentLLMError) as info:
        _client(stub.base_url).complete(_request(model="no-such-model"))
    assert "--model" in str(info.value)
    assert "no-such-model" in str(info.value)
    assert len(_chat_entries(stub)) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_is_transient_after_the_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    client = _client(base_url, attempts=2, backoff_max_s=0.05)
    tries: list[ChatRequest] = []
    once = client._complete_once

    def counting(request: ChatRequest) -> Any:
        tries.append(request)
        return once(request)

    monkeypatch.setattr(client, "_complete_once", counting)
    with pytest.raises(TransientLLMError) as info:
        client.complete(_request())
    assert len(tries) == 2
    # Not "timed out": urllib3 makes a refused connection a ConnectTimeoutError too.
    assert str(info.value) == f"cannot connect to the LLM at {base_url}"


def test_list_models_returns_the_stub_models() -> None:
    with StubServer(StubConfig(models=["alpha", "beta"])) as server:
        assert _client(server.base_url).list_models() == ["alpha", "beta"]


def test_list_models_with_a_bad_key_is_permanent() -> None:
    with (
        StubServer(StubConfig(api_key="sk-right-key")) as server,
        pytest.raises(PermanentLLMError),
    ):
        _client(server.base_url, "sk-wrong").list_models()


# --- what goes over the wire: a tiny server that records the bodies ---------------------------


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        type(self).bodies.append(body)
        answer = {
            "id": "chatcmpl-rec",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": '{"1": 3, "2": 4}'},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_json_schema_sends_the_openai_form(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, bodies = recorder
    result = _client(base_url).complete(_request(structured_output="json_schema"))
    assert (result.text, result.prompt_tokens, result.completion_tokens) == (
        '{"1": 3, "2": 4}',
        17,
        5,
    )
    [body] = bodies
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "ratings", "schema": SCHEMA, "strict": True},
    }
    assert body["model"] == MODEL
    assert body["max_tokens"] == 40
    assert body["temperature"] == 0.0
    assert body["messages"] == [
        {"role": "system", "content": "You are a viewer."},
        {"role": "user", "content": "Rate the items 1 and 2."},
    ]


def test_json_object_sends_the_schema_inside(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, bodies = recorder
    _client(base_url).complete(_request(structured_output="json_object"))
    assert bodies[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_none_sends_no_response_format(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, bodies = recorder
    _client(base_url).complete(_request(structured_output="none"))
    assert "response_format" not in bodies[0]


def test_no_schema_sends_no_response_format(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    base_url, bodies = recorder
    _client(base_url).complete(_request(json_schema=None, max_tokens=None))
    assert "response_format" not in bodies[0]
    assert "max_tokens" not in bodies[0]
