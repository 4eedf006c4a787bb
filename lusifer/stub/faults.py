"""Which chat request gets which fault, and what each content fault does to an answer."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from lusifer.stub.config import FaultKind, StubConfig

JsonDict = dict[str, Any]

# OpenAI error bodies for the faults answered with an HTTP status.
HTTP_FAULT_ERRORS: dict[str, JsonDict] = {
    "429": {
        "message": "Rate limit reached for requests (stub fault).",
        "type": "requests",
        "code": "rate_limit_exceeded",
    },
    "500": {
        "message": "The server had an error while processing your request (stub fault).",
        "type": "server_error",
        "code": None,
    },
    "retry_after_huge": {
        "message": "Rate limit reached; come back in three years (stub fault).",
        "type": "requests",
        "code": "rate_limit_exceeded",
    },
    "503": {
        "message": "The engine is currently overloaded, please try again later (stub fault).",
        "type": "server_error",
        "code": None,
    },
}


class FaultSchedule:
    """Draws faults and latency jitter reproducibly for a whole run.

    Draws happen under one lock in the order requests arrive, so a run with the same seed gets
    the same sequence of faults; which concurrent request gets which one may vary.
    """

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._fault_rng = random.Random(seed)
        # A separate generator so that jitter settings never shift the fault sequence.
        self._jitter_rng = random.Random(seed + 1)
        self._count = 0

    def draw(self, config: StubConfig) -> FaultKind | None:
        """The fault for the next chat request, or None for a good answer."""
        with self._lock:
            self._count += 1
            if not config.faults:
                return None
            if config.fault_every_n is not None:
                if self._count % config.fault_every_n:
                    return None
                turn = self._count // config.fault_every_n - 1
                return config.faults[turn % len(config.faults)]
            if config.fault_rate <= 0.0 or self._fault_rng.random() >= config.fault_rate:
                return None
            return self._fault_rng.choice(config.faults)

    def latency(self, config: StubConfig) -> float:
        """Seconds to wait before answering."""
        if config.latency_jitter_s <= 0.0:
            return config.latency_s
        with self._lock:
            return config.latency_s + self._jitter_rng.uniform(0.0, config.latency_jitter_s)


def _rating_map(answer: JsonDict) -> JsonDict:
    """The dict of ratings inside an answer: the answer itself or its first nested object."""
    if any(isinstance(v, int | float) for v in answer.values()):
        return answer
    nested = next((v for v in answer.values() if isinstance(v, dict) and v), None)
    return nested if nested is not None else answer


def _unknown_key(existing: JsonDict) -> str:
    numeric = [int(k) for k in existing if k.isdigit()]
    candidate = str(max(numeric, default=0) + 100000)
    return candidate if candidate not in existing else candidate + "0"


def corrupt(kind: FaultKind, answer: JsonDict) -> str:
    """The content text of a 200 answer spoiled by a content fault."""
    text = json.dumps(answer)
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "prose":
        return f"Sure! Here are the ratings: {text} Hope this helps."
    if kind == "nul_byte":
        return "\x00" + text  # PostgreSQL stores no NUL in text
    if kind == "huge_usage":
        return text  # the answer is right; its usage block is not (see ``api._chat``)
    spoiled: JsonDict = json.loads(text)  # a deep copy, so the correct answer stays intact
    ratings = _rating_map(spoiled)
    keys = list(ratings)
    if kind == "wrong_keys" and keys:
        ratings[_unknown_key(ratings)] = ratings.pop(keys[0])
        if len(keys) > 1:
            del ratings[keys[-1]]
    elif kind == "out_of_range" and keys:
        ratings[keys[0]] = 7
        if len(keys) > 1:
            ratings[keys[1]] = 0
    elif kind == "non_integer" and keys:
        ratings[keys[0]] = 3.5
        if len(keys) > 1:
            ratings[keys[1]] = "four"
    elif kind == "missing_keys" and keys:
        for key in keys[len(keys) - max(1, len(keys) // 2) :]:
            del ratings[key]
    return json.dumps(spoiled)
