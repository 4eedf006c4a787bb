"""Deterministic answers of the stub: what a perfectly obedient model would say.

The stub knows nothing about users. It derives everything from the request itself so that the
same request always gets the same answer:

- a rating of item ``i`` is ``1 + crc32(f"{system_text}|{i}") % 5``, where ``system_text`` is the
  system message (Lusifer puts the user's profile there), so different users rate differently;
- a profile is a short text picked by a hash of the last user message (the ratings it shows).

Which answer to give comes from the JSON schema of ``response_format`` when there is one (its
properties are filled: integers and id-like keys get ratings, strings get text), otherwise from
the last user message: the ``<item id="..">`` tags not already followed by a rating on their
line, or a trailing list of ids (a re-ask); with no ids at all, a profile.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import zlib
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

_ITEM_TAG = re.compile(r"""<item\s+id=["']([^"']+)["'][^\n]*""")
# A tag line that already carries a rating is context the model was shown, not a question.
_RATED_LINE = re.compile(r"</item>\s*[^\n]*rating\s*:\s*\d", re.IGNORECASE)
_TRAILING_IDS = re.compile(r":\s*(\d+(?:\s*,\s*\d+)*)\s*\.?\s*$")

_GENRES = ("drama", "comedy", "thriller", "science fiction", "romance", "animation", "war films")
_ERAS = ("classic", "1970s", "1980s", "1990s", "recent")
_STRICTNESS = ("a generous rater", "a strict rater", "a moderate rater", "an unpredictable rater")


class BadRequest(ValueError):
    """A chat request the stub cannot answer, reported to the client as HTTP 400."""


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat request that decide the answer."""

    model: str
    messages: list[JsonDict]
    schema: JsonDict | None


def parse_chat_request(body: object) -> ChatRequest:
    """Check the shape of a chat completion body and pull out what the stub uses."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a list of objects")
    if body.get("stream"):
        raise BadRequest("the stub does not stream; send stream=false")
    schema = schema_of(body.get("response_format"))
    return ChatRequest(model=model, messages=messages, schema=schema)


def schema_of(response_format: object) -> JsonDict | None:
    """The JSON schema of an OpenAI (``json_schema``) or llama.cpp (``json_object``) format."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    schema: object = None
    if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        schema = response_format["json_schema"].get("schema")
    elif kind == "json_object":
        schema = response_format.get("schema")
    return schema if isinstance(schema, dict) else None


def message_text(message: JsonDict) -> str:
    """The text of a message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def system_text(messages: list[JsonDict]) -> str:
    """All system (or developer) instructions, the part of a Lusifer prompt naming the user."""
    texts = [message_text(m) for m in messages if m.get("role") in ("system", "developer")]
    return "\n".join(texts)


def last_user_text(messages: list[JsonDict]) -> str:
    """The last user message, the one holding the question."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def requested_item_ids(text: str) -> list[str]:
    """Ids the message asks to rate, in order of first mention."""
    ids = [m.group(1) for m in _ITEM_TAG.finditer(text) if not _RATED_LINE.search(m.group(0))]
    if not ids and (trailing := _TRAILING_IDS.search(text.strip())):
        ids = [part.strip() for part in trailing.group(1).split(",")]
    return list(dict.fromkeys(ids))


def rating(seed_text: str, item_id: str) -> int:
    """The stub's rating 1..5 of an item for the user described by ``seed_text``."""
    return 1 + zlib.crc32(f"{seed_text}|{item_id}".encode()) % 5


def _pick(options: tuple[str, ...], digest: bytes, index: int) -> str:
    return options[digest[index] % len(options)]


def profile_text(user_text: str) -> str:
    """A short profile chosen by a hash of the ratings the model was shown."""
    d = hashlib.sha256(user_text.encode()).digest()
    # Three distinct genres, so the profile never likes and dislikes the same one.
    liked, also_liked, disliked = random.Random(d).sample(_GENRES, 3)
    return (
        f"Enjoys {liked} and {also_liked}, prefers {_pick(_ERAS, d, 2)} films, "
        f"dislikes {disliked}, and is {_pick(_STRICTNESS, d, 4)}."
    )


def change_text(user_text: str) -> str:
    """One sentence on what the latest ratings revealed."""
    d = hashlib.sha256(user_text.encode()).digest()
    return f"The latest ratings show a stronger interest in {_pick(_GENRES, d, 5)}."


def answer_for(request: ChatRequest) -> JsonDict:
    """The JSON object the stub answers to a chat request."""
    seed = system_text(request.messages)
    user = last_user_text(request.messages)
    root = request.schema
    if root is not None and (schema := _resolve(root, root)).get("properties"):
        return _fill_object(schema, root, seed, user)
    ids = requested_item_ids(user)
    if ids:
        return {item_id: rating(seed, item_id) for item_id in ids}
    return {"profile": profile_text(user), "change": change_text(user)}


def _resolve(schema: JsonDict, root: JsonDict) -> JsonDict:
    """Follow local ``$ref``s and take the first non-null branch of ``anyOf``/``oneOf``."""
    for _ in range(32):  # bounded: a cyclic $ref must not hang a request thread
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = root
            for part in ref[2:].split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            schema = node if isinstance(node, dict) else {}
            continue
        branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
        if isinstance(branches, list):
            usable = [b for b in branches if isinstance(b, dict) and b.get("type") != "null"]
            schema = usable[0] if usable else {}
            continue
        return schema
    return {}


def _fill_object(schema: JsonDict, root: JsonDict, seed: str, user: str) -> JsonDict:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    extra = [k for k in required if k not in props] if isinstance(required, list) else []
    keys = [*props, *(k for k in extra if isinstance(k, str))]
    return {
        key: _fill_value(_resolve(props.get(key) or {}, root), root, key, seed, user)
        for key in keys
    }


def _fill_value(schema: JsonDict, root: JsonDict, key: str, seed: str, user: str) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        value = rating(seed, key)
        return value if value in enum else enum[0]
    if kind == "object":
        return _fill_object(schema, root, seed, user)
    if kind in ("integer", "number") or (kind is None and key.isdigit()):
        return rating(seed, key)
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if key == "profile":
        return profile_text(user)
    if key == "change":
        return change_text(user)
    return f"Stub text for {key}."


def approx_tokens(text: str) -> int:
    """Token count the way the stub bills it: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def prompt_text(request: ChatRequest) -> str:
    """The prompt as the stub bills it: the texts of the messages, in order."""
    return "".join(message_text(m) for m in request.messages)


def completion(
    request: ChatRequest, content: str, completion_id: str, created: int, cached_chars: int = 0
) -> JsonDict:
    """An OpenAI ChatCompletion object carrying ``content``; ``cached_chars`` of its prompt
    came from the prefix cache."""
    prompt_tokens = approx_tokens(prompt_text(request))
    completion_tokens = approx_tokens(content)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": "lusifer-stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": min(prompt_tokens, cached_chars // 4)},
        },
    }
