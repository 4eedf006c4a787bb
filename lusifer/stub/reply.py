"""An HTTP answer of the stub, decided before any sleeping or socket I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lusifer.stub.config import FaultKind


@dataclass
class Reply:
    """An HTTP answer to send after ``delay_s``; a status of None drops the connection.

    ``raw`` bytes, when set, are sent as they are (a file's content) instead of ``body`` as JSON.
    """

    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    fault: FaultKind | None = None
    delay_s: float = 0.0
    raw: bytes | None = None
    content_type: str = "application/json"


def error_reply(status: int, message: str, code: str | None) -> Reply:
    """An OpenAI error body with ``status``."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return Reply(status, {"error": error})


def body_sha256(raw: bytes) -> str | None:
    """Hash of the canonical JSON of a body (sorted keys), or of its bytes if not JSON."""
    if not raw:
        return None
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(canonical.encode()).hexdigest()
