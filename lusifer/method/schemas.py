"""Output schemas of the LLM answers and their validation, with repair of common damage."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from lusifer.core.errors import OutputValidationError
from lusifer.method.prompts import untrusted

# The longest profile kept (about 2,000 tokens): a server that ignores max_tokens must not
# make a 10 MB answer the profile that every later prompt of the user carries.
MAX_PROFILE_CHARS = 8_000
MAX_CHANGE_CHARS = 1_000


class ProfileAnswer(BaseModel):
    """A profile step: the profile and one sentence on what changed."""

    profile: str = Field(min_length=1, max_length=MAX_PROFILE_CHARS)
    change: str = Field(default="", max_length=MAX_CHANGE_CHARS)


PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"profile": {"type": "string"}, "change": {"type": "string"}},
    "required": ["profile", "change"],
    "additionalProperties": False,
}

# Grammar-constrained servers (llama.cpp) enforce a minimum string length, which keeps a small
# model from answering an empty profile; OpenAI's strict mode rejects the keyword, so only the
# json_object mode asks for it. No maxLength: llama.cpp unrolls it into a grammar too large to
# parse (its server dies on it); max_tokens bounds the answer instead.
PROFILE_SCHEMA_WITH_LENGTHS: dict[str, Any] = {
    **PROFILE_SCHEMA,
    "properties": {
        "profile": {"type": "string", "minLength": 40},
        "change": {"type": "string", "minLength": 10},
    },
}


def rating_schema(item_ids: Sequence[int]) -> dict[str, Any]:
    """A JSON schema whose keys are exactly ``item_ids``, each an integer rating 1..5."""
    keys = [str(i) for i in item_ids]
    return {
        "type": "object",
        "properties": {key: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for key in keys},
        "required": keys,
        "additionalProperties": False,
    }


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_PAIR = re.compile(r'"?(\d+)"?\s*:\s*"?(-?\d+(?:\.\d+)?)"?')


def extract_json_object(text: str) -> dict[str, Any] | None:
    """Find the JSON object in an answer: plain, fenced, wrapped in prose, or cut short."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        if end > start:
            candidates.append(text[start : end + 1])
        # A truncated answer: close what is open after the last complete value.
        cut = text[start:].rstrip().rstrip(",")
        candidates.append(cut + "}")
        candidates.append(cut + '"}')
    for candidate in candidates:
        try:
            # strict=False: grammar-constrained servers (llama.cpp) let raw newlines into
            # strings, which plain JSON forbids but which carry no ambiguity.
            value = json.loads(candidate, strict=False)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_profile(text: str) -> ProfileAnswer:
    """Validate a profile answer; prose without JSON is taken as the profile itself."""
    obj = extract_json_object(text)
    if obj is None:
        stripped = text.strip()
        if len(stripped) > MAX_PROFILE_CHARS:
            raise OutputValidationError(_too_long(len(stripped)), raw_text=text)
        if len(stripped) >= 20 and "{" not in stripped:
            return ProfileAnswer(profile=stripped, change="")
        raise OutputValidationError("profile answer is not JSON", raw_text=text)
    profile, change = obj.get("profile"), obj.get("change") or ""
    if isinstance(profile, str) and len(profile.strip()) > MAX_PROFILE_CHARS:
        raise OutputValidationError(_too_long(len(profile.strip())), raw_text=text)
    if isinstance(change, str):
        change = change[:MAX_CHANGE_CHARS]  # one sentence was asked for; the rest is noise
    try:
        answer = ProfileAnswer.model_validate({"profile": profile, "change": change})
    except ValidationError:
        raise OutputValidationError("profile answer lacks a non-empty 'profile'", text) from None
    return answer


def _too_long(chars: int) -> str:
    return f"profile answer is {chars:,} characters, past the {MAX_PROFILE_CHARS:,} kept"


def _as_rating(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    return None


def _echo(value: Any) -> str:
    # Problems are shown to the model in the re-ask: what it wrote comes back short and with
    # tag delimiters neutralised, so an answer cannot plant an <item> tag in the next prompt.
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return untrusted(text)


def parse_ratings(text: str, expected: Sequence[int]) -> tuple[dict[int, int], list[str]]:
    """Take the valid ratings of ``expected`` items from an answer, and list what was wrong."""
    wanted = {str(i): i for i in expected}
    obj = extract_json_object(text)
    if obj is None:
        # Last resort: "id": rating pairs from a damaged answer.
        obj = {key: value for key, value in _PAIR.findall(text)}
        if not obj:
            return {}, ["the answer is not a JSON object"]
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))  # {"ratings": {...}}
    ratings: dict[int, int] = {}
    problems: list[str] = []
    for key, value in obj.items():
        key_text = str(key).strip()
        if key_text not in wanted:
            problems.append(f"{_echo(key_text)} is not one of the items asked")
            continue
        rating = _as_rating(value)
        if rating is None:
            problems.append(f"item {key_text} got {_echo(value)}, not an integer 1-5")
            continue
        ratings[wanted[key_text]] = rating
    missing = [i for i in expected if i not in ratings]
    if missing:
        problems.append("not rated: " + ", ".join(str(i) for i in missing))
    return ratings, problems
