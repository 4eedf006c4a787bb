"""Where a configuration's LLM is and with what key, as a worker or environment sees it."""

from __future__ import annotations

from lusifer.core.config import LOCAL_BASE_URL, LLMConfig
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings


def resolve_base_url(config: LLMConfig, settings: Settings, fix: str) -> str:
    """The endpoint to call: the configured one, or the local model server of local mode."""
    if config.base_url != LOCAL_BASE_URL:
        return config.base_url
    if not settings.local_llm_url:
        raise ConfigurationError(f"the local model server is not running here: {fix}")
    return settings.local_llm_url


def api_key(settings: Settings) -> str | None:
    """The LLM key of this process (from its environment only, never from a message or row)."""
    return settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
