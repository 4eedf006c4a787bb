"""Run configuration (what a run computes) and process settings (where things are)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lusifer.core.config import LLMConfig, RunConfig, parse_run_config
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings, get_settings

LLM = {"base_url": "http://x/v1", "model": "m"}
SECRET = "sk-very-secret-value-42"


def _run(**fields: Any) -> dict[str, Any]:
    return {"llm": LLM, **fields}


def _one_line_error(data: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_run_config(data)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- run configuration -----------------------------------------------------------------------


def test_defaults_are_the_papers() -> None:
    config = parse_run_config(_run())
    assert config.profile_history == 40
    assert config.profile_batch == 10
    assert config.recent_k == 10
    assert config.folds == ("u1", "u2", "u3", "u4", "u5")
    assert config.users is None
    assert config.max_users is None
    assert config.chunk_size is None  # the prompt set decides
    assert config.prompt_set == "lusifer"
    assert config.dataset.kind == "movielens-100k"
    assert config.llm == LLMConfig(base_url="http://x/v1", model="m")
    assert config.llm.temperature == 0.0
    assert config.llm.structured_output == "json_schema"


def test_batch_larger_than_history() -> None:
    message = _one_line_error(_run(profile_history=20, profile_batch=30))
    assert "batch" in message
    assert "30" in message and "20" in message


def test_batch_equal_to_history_is_fine() -> None:
    assert parse_run_config(_run(profile_history=20, profile_batch=20)).profile_batch == 20


def test_chunk_size_zero() -> None:
    assert "chunk_size" in _one_line_error(_run(chunk_size=0))


def test_unknown_key() -> None:
    assert "colour" in _one_line_error(_run(colour="red"))


def test_unknown_key_of_the_llm() -> None:
    assert "llm.colour" in _one_line_error({"llm": {**LLM, "colour": "red"}})


def test_missing_llm() -> None:
    assert "llm" in _one_line_error({})


def test_no_fold() -> None:
    assert "fold" in _one_line_error(_run(folds=[]))


@pytest.mark.parametrize("field", ["temperature", "structured_output"])
def test_bad_llm_values(field: str) -> None:
    bad = {"temperature": 3.5, "structured_output": "xml"}[field]
    assert field in _one_line_error({"llm": {**LLM, field: bad}})


def test_config_round_trips_through_json() -> None:
    config = parse_run_config(_run(folds=["u2"], users=[1, 5], chunk_size=5, max_reask=0))
    again = parse_run_config(json.loads(config.model_dump_json()))
    assert again == config
    assert isinstance(again, RunConfig)


def test_config_holds_no_secret() -> None:
    assert "api_key" not in RunConfig.model_fields
    assert "api_key" not in LLMConfig.model_fields


# --- settings --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No LUSIFER_* or OPENAI_API_KEY variables, and no .env file in the working directory."""
    for name in list(os.environ):
        if name.startswith("LUSIFER_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.broker_url is None
    assert settings.database_url is None
    assert settings.llm_api_key is None
    assert settings.queue == "lusifer"
    assert settings.visibility_timeout_s >= 3600


def test_settings_read_lusifer_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LUSIFER_BROKER_URL", "redis://broker:6379/0")
    clean_env.setenv("LUSIFER_DATABASE_URL", "postgresql+psycopg://u@db/lusifer")
    clean_env.setenv("LUSIFER_QUEUE", "q2")
    clean_env.setenv("LUSIFER_WORKER_CONCURRENCY", "3")
    clean_env.setenv("LUSIFER_LLM_API_KEY", SECRET)
    settings = get_settings()
    assert settings.broker_url == "redis://broker:6379/0"
    assert settings.database_url == "postgresql+psycopg://u@db/lusifer"
    assert settings.queue == "q2"
    assert settings.worker_concurrency == 3
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == SECRET


def test_settings_are_cached_until_cleared(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LUSIFER_QUEUE", "first")
    assert get_settings() is get_settings()
    clean_env.setenv("LUSIFER_QUEUE", "second")
    assert get_settings().queue == "first"
    get_settings.cache_clear()
    assert get_settings().queue == "second"


def test_openai_api_key_is_the_fallback(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", SECRET)
    key = get_settings().llm_api_key
    assert key is not None
    assert key.get_secret_value() == SECRET


def test_lusifer_key_wins_over_openai_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-openai")
    clean_env.setenv("LUSIFER_LLM_API_KEY", SECRET)
    key = get_settings().llm_api_key
    assert key is not None
    assert key.get_secret_value() == SECRET


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LUSIFER_QUEUE=from-dotenv\n", encoding="utf-8")
    assert get_settings().queue == "from-dotenv"


def test_key_is_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LUSIFER_LLM_API_KEY", SECRET)
    settings = get_settings()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in repr(settings.llm_api_key)
    assert SECRET not in str(settings.llm_api_key)
    assert SECRET not in settings.model_dump_json()
    assert SECRET not in f"{settings}"


def test_settings_object_can_be_built_directly(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(broker_url="redis://h:1/0", queue="x")
    assert (settings.broker_url, settings.queue) == ("redis://h:1/0", "x")
