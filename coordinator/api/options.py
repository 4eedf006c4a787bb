"""The settings of a ``Lusifer`` object: which model answers, and the method's sizes.

Resolved as `lusifer run` resolves its flags: no endpoint means the local model that local mode
starts; an endpoint needs a model name. Checked once, when the object is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coordinator.local import LOCAL_MODEL_NAME
from lusifer.core.config import LOCAL_BASE_URL, RunConfig, parse_run_config
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings
from lusifer.data.frames import FrameColumns


class MethodOptions(BaseModel):
    """The paper's sizes and the prompt set (the same fields as ``RunConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile_history: int = Field(default=40, ge=1)
    profile_batch: int = Field(default=10, ge=1)
    recent_k: int = Field(default=10, ge=0)
    chunk_size: int | None = Field(default=None, ge=1)
    max_reask: int = Field(default=2, ge=0)
    overview_chars: int = Field(default=600, ge=0)
    prompt_set: str = "lusifer"
    prompts_dir: Path | None = None


def frame_columns(columns: Mapping[str, str | None] | FrameColumns | None) -> FrameColumns:
    """The column mapping as given (our field -> the frame's column), checked."""
    if columns is None:
        return FrameColumns()
    if isinstance(columns, FrameColumns):
        return columns
    try:
        return FrameColumns.model_validate(dict(columns))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        fields = ", ".join(FrameColumns.model_fields)
        raise ConfigurationError(
            f"columns: {field}: {first['msg']}; map any of {fields} to your column names"
        ) from None


def llm_config(
    settings: Settings,
    *,
    base_url: str | None,
    model: str | None,
    temperature: float,
    structured_output: str | None,
    timeout_s: float,
    price_prompt: float,
    price_completion: float,
) -> dict[str, Any]:
    """The LLM part of a run configuration, with the CLI's defaults."""
    endpoint = base_url or settings.llm_base_url
    name = model or settings.llm_model
    if endpoint is None:
        endpoint, name = LOCAL_BASE_URL, name or LOCAL_MODEL_NAME
        # llama.cpp takes the schema inside json_object and turns it into a grammar.
        output = structured_output or "json_object"
    else:
        output = structured_output or "json_schema"
        if name is None:
            raise ConfigurationError("base_url needs model= (or LUSIFER_LLM_MODEL)")
    return {
        "base_url": endpoint,
        "model": name,
        "temperature": temperature,
        "timeout_s": timeout_s,
        "structured_output": output,
        "price_prompt_per_mtok": price_prompt,
        "price_completion_per_mtok": price_completion,
    }


def run_config(llm: Mapping[str, Any], method: MethodOptions, fold: str) -> RunConfig:
    """The configuration stored with an API run: DataFrames as data, one fold."""
    return parse_run_config(
        {
            "dataset": {"kind": "dataframes"},
            "folds": (fold,),
            "llm": dict(llm),
            **method.model_dump(),
        }
    )


def check_method(values: Mapping[str, Any]) -> MethodOptions:
    """The method's sizes, one clear line when one is out of range."""
    try:
        return MethodOptions.model_validate(dict(values))
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigurationError(
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}; fix that argument"
        ) from None
