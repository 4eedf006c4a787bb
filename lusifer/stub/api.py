"""What the stub answers to each request, decided before any sleeping or socket I/O.

The OpenAI routes (``/v1/...``) check the key, are logged, and chat requests may be faulted.
The control routes (``/_stub/...``) are for the test harness: never faulted, never logged,
and open without a key so a test can inspect a server whose key it is testing.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid

from pydantic import ValidationError

from lusifer.stub.answers import (
    BadRequest,
    answer_for,
    completion,
    parse_chat_request,
    prompt_text,
)
from lusifer.stub.batches import BATCHES_PATH, FILES_PATH, handle_batch_api
from lusifer.stub.config import StubConfig
from lusifer.stub.faults import HTTP_FAULT_ERRORS, corrupt
from lusifer.stub.reply import Reply, body_sha256, error_reply
from lusifer.stub.state import CHAT_PATH, StubState

__all__ = ["Reply", "body_sha256", "handle_api", "handle_control"]

MODELS_PATH = "/v1/models"


def handle_api(
    state: StubState,
    method: str,
    path: str,
    raw: bytes,
    authorization: str | None,
    content_type: str | None = None,
) -> Reply:
    """Decide the answer to an OpenAI route and log it (without the key)."""
    reply = _route(state, method, path, raw, authorization, content_type)
    reply.entry = {
        "path": path,
        "method": method,
        "body_sha256": body_sha256(raw),
        "status": reply.status,
        "fault": reply.fault,
        "auth": authorization is not None,
        "ts": time.time(),
        # Set once the answer is written (True) or found unwanted (False): a client killed
        # while it waited never got the answer, whatever the status says.
        "delivered": None,
    }
    state.record(reply.entry)
    return reply


def _route(
    state: StubState,
    method: str,
    path: str,
    raw: bytes,
    authorization: str | None,
    content_type: str | None,
) -> Reply:
    config = state.config
    if config.api_key is not None:
        expected = f"Bearer {config.api_key.get_secret_value()}"
        # Constant-time comparison: habit worth keeping even in a stub.
        if not hmac.compare_digest((authorization or "").encode(), expected.encode()):
            return error_reply(401, "Incorrect API key provided.", "invalid_api_key")
    if path == MODELS_PATH and method == "GET":
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "lusifer-stub"}
            for m in config.models
        ]
        return Reply(200, {"object": "list", "data": data})
    if path == CHAT_PATH and method == "POST":
        return _chat(state, config, raw)
    if path.startswith((FILES_PATH, BATCHES_PATH)):
        return handle_batch_api(
            state, method, path, raw, content_type, lambda body: _chat(state, config, body)
        )
    if path in (MODELS_PATH, CHAT_PATH):
        return error_reply(405, f"{method} is not allowed on {path}", "method_not_allowed")
    return error_reply(404, f"Unknown request URL: {method} {path}", "unknown_url")


def _chat(state: StubState, config: StubConfig, raw: bytes) -> Reply:
    try:
        request = parse_chat_request(json.loads(raw or b"null"))
    except (ValueError, BadRequest) as err:
        return error_reply(400, f"Invalid chat request: {err}", None)
    if request.model not in config.models:
        return error_reply(404, f"The model `{request.model}` does not exist", "model_not_found")
    fault, delay = state.draw(config)
    if fault in HTTP_FAULT_ERRORS:
        status = 429 if fault == "retry_after_huge" else int(fault)
        reply = Reply(status, {"error": HTTP_FAULT_ERRORS[fault]}, fault=fault, delay_s=delay)
        if fault == "429":
            reply.headers["Retry-After"] = "1"
        if fault == "retry_after_huge":
            reply.headers["Retry-After"] = "99999999"
        return reply
    if fault == "reset":
        return Reply(None, fault=fault, delay_s=delay)
    answer = answer_for(request)
    content = json.dumps(answer) if fault is None or fault == "timeout" else corrupt(fault, answer)
    if fault == "timeout":
        # A correct answer, but later than any sensible client timeout.
        delay += config.timeout_sleep_s
    cached = state.cached_chars(prompt_text(request))
    body = completion(
        request, content, f"chatcmpl-stub-{uuid.uuid4().hex}", int(time.time()), cached
    )
    if fault == "huge_usage":
        body["usage"].update(completion_tokens=10**15, total_tokens=10**15, prompt_tokens="many")
    return Reply(200, body, fault=fault, delay_s=delay)


def handle_control(state: StubState, method: str, path: str, raw: bytes) -> Reply:
    """Serve the harness routes: the request log, reset, and run-time config."""
    if path == "/_stub/requests" and method == "GET":
        return Reply(200, state.requests())
    if path == "/_stub/stats" and method == "GET":
        return Reply(200, state.stats())
    if path == "/_stub/reset" and method == "POST":
        state.reset()
        return Reply(200, {"ok": True})
    if path == "/_stub/config" and method == "GET":
        return Reply(200, state.config.public())
    if path == "/_stub/config" and method == "POST":
        try:
            fields = json.loads(raw or b"{}")
            if not isinstance(fields, dict):
                raise ValueError("the body must be a JSON object of config fields")
            return Reply(200, state.update(**fields).public())
        except (ValueError, ValidationError) as err:
            return error_reply(400, f"Invalid stub config: {err}", None)
    return error_reply(404, f"Unknown stub control URL: {method} {path}", "unknown_url")
