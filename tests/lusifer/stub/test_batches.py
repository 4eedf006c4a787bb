"""The stub's Files and Batches endpoints, driven over HTTP by Lusifer's batch client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from lusifer.batchapi.client import BatchClient, BatchInfo
from lusifer.batchapi.lines import LineAnswer, LineError, parse_file, request_line
from lusifer.llm import ChatRequest, OpenAICompatibleModel
from lusifer.stub import StubConfig, StubServer

KEY = "sk-stub-batch-key"


def rating_request(user: str, ids: list[str]) -> ChatRequest:
    props = {i: {"type": "integer", "minimum": 1, "maximum": 5} for i in ids}
    return ChatRequest(
        model="stub-model",
        messages=(
            ("system", f"You are viewer {user}, an Amélie fan."),
            ("user", "Rate: " + ", ".join(ids)),
        ),
        schema_name="ratings",
        json_schema={"type": "object", "properties": props, "required": ids},
    )


REQUESTS = [rating_request(str(u), [str(u * 10 + k) for k in range(3)]) for u in range(6)]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(StubConfig(api_key=KEY, batch_delay_s=0.3)) as server:
        yield server


@pytest.fixture
def client(stub: StubServer) -> BatchClient:
    return BatchClient(stub.base_url, KEY, timeout_s=10, attempts=1)


def wait(client: BatchClient, batch_id: str) -> BatchInfo:
    deadline = time.monotonic() + 10
    info = client.retrieve(batch_id)
    while not info.finished:
        assert time.monotonic() < deadline, "the batch never finished"
        time.sleep(0.05)
        info = client.retrieve(batch_id)
    return info


def results(client: BatchClient, info: BatchInfo) -> list[LineAnswer | LineError]:
    found: list[LineAnswer | LineError] = []
    for file_id in (info.output_file_id, info.error_file_id):
        if file_id:
            found.extend(parse_file(client.download(file_id)))
    return found


def test_a_batch_answers_every_line_as_the_online_endpoint_does(
    stub: StubServer, client: BatchClient
) -> None:
    content = b"".join(request_line(r) for r in REQUESTS)
    info = client.submit(content, {"lusifer_run": "r1"}, "24h")
    assert info.status == "in_progress" and info.output_file_id is None
    done = wait(client, info.id)
    assert (done.status, done.total, done.completed, done.failed) == ("completed", 6, 6, 0)
    answers = {a.custom_id: a for a in results(client, done) if isinstance(a, LineAnswer)}
    online = OpenAICompatibleModel(stub.base_url, KEY, attempts=1)
    for request in REQUESTS:
        answer = answers[request.cache_key()].result
        expected = online.complete(request)
        assert answer.text == expected.text
        assert answer.prompt_tokens == expected.prompt_tokens > 0
    lines = [r for r in stub.requests() if r["method"] == "BATCH"]
    assert sorted(r["custom_id"] for r in lines) == sorted(r.cache_key() for r in REQUESTS)
    assert all(r["batch_id"] == info.id for r in lines)


def test_faults_are_applied_per_line(stub: StubServer, client: BatchClient) -> None:
    stub.update(fault_every_n=2, faults=["500", "wrong_keys", "reset"])
    info = wait(client, client.submit(b"".join(request_line(r) for r in REQUESTS), {}, "24h").id)
    assert (info.completed, info.failed) == (4, 2)  # the 500 and the reset; wrong_keys is a 200
    parsed = results(client, info)
    errors = [p for p in parsed if isinstance(p, LineError)]
    assert sorted((str(e.status_code), e.transient) for e in errors) == [
        ("500", True),
        ("None", True),
    ]
    texts = [json.loads(p.result.text) for p in parsed if isinstance(p, LineAnswer)]
    requested = {str(u * 10 + k) for u in range(6) for k in range(3)}
    assert any(not set(t) <= requested for t in texts)  # the wrong_keys garbage


def test_a_batch_is_found_again_by_its_metadata(client: BatchClient) -> None:
    first = client.submit(request_line(REQUESTS[0]), {"lusifer_run": "r2", "part": "0"}, "24h")
    assert client.find({"lusifer_run": "r2", "part": "0"}) == client.retrieve(first.id)
    assert client.find({"lusifer_run": "r2", "part": "1"}) is None


def test_file_content_is_served_as_uploaded(stub: StubServer, client: BatchClient) -> None:
    content = request_line(REQUESTS[1])
    info = client.submit(content, {}, "24h")
    assert client.download(info.input_file_id) == content.decode()


def test_cancel_stops_a_batch_before_it_answers(stub: StubServer, client: BatchClient) -> None:
    stub.update(batch_delay_s=30)
    info = client.submit(request_line(REQUESTS[2]), {}, "24h")
    response = httpx.post(
        f"{stub.base_url}/batches/{info.id}/cancel", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.json()["status"] == "cancelled"
    assert client.retrieve(info.id).output_file_id is None


def test_bad_batch_requests_are_400(stub: StubServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    bad_window = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}
    assert httpx.post(f"{stub.base_url}/batches", json=bad_window, headers=auth).status_code == 400
    unknown = {**bad_window, "completion_window": "24h"}
    assert httpx.post(f"{stub.base_url}/batches", json=unknown, headers=auth).status_code == 400
    no_file = httpx.post(f"{stub.base_url}/files", data={"purpose": "batch"}, headers=auth)
    assert no_file.status_code == 400
    assert httpx.get(f"{stub.base_url}/batches/nope", headers=auth).status_code == 404
    assert httpx.get(f"{stub.base_url}/batches", headers={}).status_code == 401
