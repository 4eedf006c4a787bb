"""The Files and Batches endpoints of the stub: the OpenAI Batch API, answered line by line.

A batch's lines are answered when it is created, each exactly as ``/v1/chat/completions``
would answer it, fault injection included: an HTTP fault or a reset puts the line in the error
file, a content fault puts garbage in the output file. The batch shows ``in_progress`` until
``batch_delay_s`` has passed, then ``completed`` with its files. Each answered line is logged
(``method`` ``BATCH``) so tests can see which requests were submitted, and how often.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from lusifer.stub.reply import Reply, body_sha256, error_reply
from lusifer.stub.state import CHAT_PATH, StubState

FILES_PATH = "/v1/files"
BATCHES_PATH = "/v1/batches"
JsonDict = dict[str, Any]
AnswerLine = Callable[[bytes], Reply]


def _multipart_fields(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _file_object(stored: JsonDict) -> JsonDict:
    return {k: v for k, v in stored.items() if k != "content"}


def _upload(state: StubState, raw: bytes, content_type: str | None) -> Reply:
    if not content_type or not content_type.startswith("multipart/form-data"):
        return error_reply(400, "upload a file as multipart/form-data", None)
    fields = _multipart_fields(raw, content_type)
    purpose = fields.get("purpose", (None, b""))[1].decode()
    if "file" not in fields or not purpose:
        return error_reply(400, "a file upload needs the fields 'file' and 'purpose'", None)
    filename, content = fields["file"]
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    stored = {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": filename or "upload",
        "purpose": purpose,
        "status": "processed",
        "content": content,
    }
    with state.batch_lock:
        state.files[file_id] = stored
    return Reply(200, _file_object(stored))


def _store_result_file(state: StubState, lines: list[JsonDict], purpose: str) -> str | None:
    if not lines:
        return None
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    state.files[file_id] = {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": f"{purpose}.jsonl",
        "purpose": purpose,
        "status": "processed",
        "content": content,
    }
    return file_id


def _answer(state: StubState, batch_id: str, line: JsonDict, answer: AnswerLine) -> JsonDict:
    """One line of the output or error file, logged like a chat request."""
    custom_id = str(line.get("custom_id"))
    body = json.dumps(line.get("body")).encode()
    reply = answer(body)
    state.record(
        {
            "path": CHAT_PATH,
            "method": "BATCH",
            "batch_id": batch_id,
            "custom_id": custom_id,
            "body_sha256": body_sha256(body),
            "status": reply.status,
            "fault": reply.fault,
            "auth": True,
            "ts": time.time(),
        }
    )
    result: JsonDict = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id}
    if reply.status is None:  # a dropped connection: the line never got an answer
        result.update(response=None, error={"code": "server_error", "message": "reset (stub)"})
    else:
        response = {"status_code": reply.status, "request_id": uuid.uuid4().hex, "body": reply.body}
        result.update(response=response, error=None)
    return result


def _create(state: StubState, raw: bytes, answer: AnswerLine) -> Reply:
    try:
        request = json.loads(raw or b"null")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return error_reply(400, "the request body must be a JSON object", None)
    if request.get("endpoint") != CHAT_PATH:
        return error_reply(400, f"the stub batches only {CHAT_PATH}", "invalid_endpoint")
    if request.get("completion_window") != "24h":
        return error_reply(400, "completion_window must be '24h'", None)
    with state.batch_lock:
        stored = state.files.get(str(request.get("input_file_id")))
    if stored is None or stored["purpose"] != "batch":
        return error_reply(400, "input_file_id names no file uploaded with purpose 'batch'", None)
    batch_id = f"batch_{uuid.uuid4().hex[:24]}"
    outputs: list[JsonDict] = []
    errors: list[JsonDict] = []
    for raw_line in stored["content"].splitlines():
        if raw_line.strip():
            result = _answer(state, batch_id, json.loads(raw_line), answer)
            ok = result["response"] is not None and result["response"]["status_code"] == 200
            (outputs if ok else errors).append(result)
    now = time.time()
    with state.batch_lock:
        state.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": CHAT_PATH,
            "errors": None,
            "input_file_id": stored["id"],
            "completion_window": "24h",
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "in_progress_at": int(now),
            "expires_at": int(now) + 24 * 3600,
            "completed_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(outputs) + len(errors), "completed": 0, "failed": 0},
            "metadata": request.get("metadata") or {},
            "_done_at": now + state.config.batch_delay_s,
            "_outputs": outputs,
            "_errors": errors,
        }
        return Reply(200, _public(state, batch_id))


def _public(state: StubState, batch_id: str) -> JsonDict:
    """The batch as a client sees it now; completes it once its delay has passed.

    Called with ``state.batch_lock`` held.
    """
    batch = state.batches[batch_id]
    if batch["status"] == "in_progress" and time.time() >= batch["_done_at"]:
        batch.update(
            status="completed",
            completed_at=int(time.time()),
            output_file_id=_store_result_file(state, batch["_outputs"], "batch_output"),
            error_file_id=_store_result_file(state, batch["_errors"], "batch_output"),
            request_counts={
                "total": len(batch["_outputs"]) + len(batch["_errors"]),
                "completed": len(batch["_outputs"]),
                "failed": len(batch["_errors"]),
            },
        )
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def handle_batch_api(
    state: StubState,
    method: str,
    path: str,
    raw: bytes,
    content_type: str | None,
    answer: AnswerLine,
) -> Reply:
    """Serve ``/v1/files...`` and ``/v1/batches...``."""
    parts = path.strip("/").split("/")  # ["v1", "files"|"batches", id?, action?]
    if parts[1] == "files":
        if len(parts) == 2 and method == "POST":
            return _upload(state, raw, content_type)
        with state.batch_lock:
            stored = state.files.get(parts[2]) if len(parts) > 2 else None
        if stored is None:
            return error_reply(404, f"No such file: {path}", "not_found")
        if len(parts) == 4 and parts[3] == "content" and method == "GET":
            return Reply(200, raw=stored["content"], content_type="application/jsonl")
        if len(parts) == 3 and method == "GET":
            return Reply(200, _file_object(stored))
        return error_reply(404, f"Unknown request URL: {method} {path}", "unknown_url")
    if len(parts) == 2:
        if method == "POST":
            return _create(state, raw, answer)
        with state.batch_lock:
            data = [_public(state, b) for b in reversed(list(state.batches))]
        return Reply(200, {"object": "list", "data": data, "has_more": False})
    with state.batch_lock:
        if parts[2] not in state.batches:
            return error_reply(404, f"No such batch: {parts[2]}", "not_found")
        if len(parts) == 3 and method == "GET":
            return Reply(200, _public(state, parts[2]))
        if len(parts) == 4 and parts[3] == "cancel" and method == "POST":
            batch = state.batches[parts[2]]
            if batch["status"] == "in_progress":
                batch.update(status="cancelled", cancelled_at=int(time.time()))
            return Reply(200, _public(state, parts[2]))
    return error_reply(404, f"Unknown request URL: {method} {path}", "unknown_url")
