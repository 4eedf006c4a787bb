"""The configured API key never appears in a stored or printed text.

A provider may echo the key it refused in its error message ("Incorrect API key provided:
sk-..."); that message would become a job's error, the run's error and a line on screen.
Every such text passes through ``redact`` where it is stored or printed.
"""

from __future__ import annotations

from lusifer.core.settings import get_settings

# Shorter values are no key (e.g. "x" in a test): replacing them would mangle ordinary text.
_SHORTEST_SECRET = 8
MASK = "[redacted key]"


def redact(text: str) -> str:
    """``text`` with this process's LLM API key replaced by a mask."""
    key = get_settings().llm_api_key
    secret = key.get_secret_value() if key is not None else ""
    if len(secret) >= _SHORTEST_SECRET and secret in text:
        return text.replace(secret, MASK)
    return text


def redact_optional(text: str | None) -> str | None:
    """``redact`` for a text that may be missing."""
    return None if text is None else redact(text)
