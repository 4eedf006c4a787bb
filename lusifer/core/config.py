"""The run configuration: everything that decides what a run computes.

It is stored as JSON with the run, so workers, ``resume`` and ``report`` all read the same
configuration from the database. It holds no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lusifer.core.columns import ColumnMapping
from lusifer.core.errors import ConfigurationError

LOCAL_BASE_URL = "local"

StructuredOutput = Literal["json_schema", "json_object", "none"]


@dataclass(frozen=True)
class RateLimits:
    """At most ``requests`` calls and ``tokens`` tokens in any ``window_s`` seconds."""

    requests: int | None = None
    tokens: int | None = None
    window_s: float = 60.0

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.requests or self.tokens)


class LLMConfig(BaseModel):
    """Which model answers, how, and what its tokens cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1; "
        f"{LOCAL_BASE_URL!r}: the model server that local mode starts"
    )
    model: str
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    structured_output: StructuredOutput = Field(
        default="json_schema",
        description="json_schema (OpenAI, vLLM), json_object (llama.cpp: schema inside), none",
    )
    profile_max_tokens: int = Field(default=400, ge=16)
    rating_tokens_per_item: int = Field(default=12, ge=4)
    timeout_s: float = Field(default=120.0, gt=0)
    price_prompt_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    price_completion_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M output")
    rpm: int | None = Field(
        default=None, ge=1, description="Requests per rate window, shared by every worker"
    )
    tpm: int | None = Field(
        default=None, ge=1, description="Tokens per rate window, shared by every worker"
    )
    rate_window_s: float = Field(
        default=60.0, gt=0, description="Length of the rate-limit window (60: per minute)"
    )

    @field_validator("base_url", mode="after")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        if url == LOCAL_BASE_URL:
            return url
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError as err:
            raise ValueError(f"{url!r} is not a URL ({err})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL such as https://api.openai.com/v1")
        if parts.username or parts.password:
            # The URL is stored with the run and shown in reports; a key belongs in the
            # workers' environment only.
            raise ValueError(
                "the base URL carries credentials (user:password@); drop them and put the key "
                "in LUSIFER_LLM_API_KEY"
            )
        return url

    def rate_limits(self) -> RateLimits:
        """The endpoint's shared limits."""
        return RateLimits(self.rpm, self.tpm, self.rate_window_s)


class BatchConfig(BaseModel):
    """Run through the OpenAI Batch API: requests go in files, answers come back within 24 h."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discount: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of the online price the batch saves"
    )
    poll_s: float = Field(default=30.0, gt=0, description="Seconds between status polls")
    max_lines: int = Field(default=50_000, ge=1, description="Requests per batch (API limit)")
    max_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Bytes per input file (API limit)"
    )
    completion_window: str = "24h"


class DatasetConfig(BaseModel):
    """Where the data comes from: MovieLens 100K, or any ratings/items/users CSVs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "dataframes": planned from pandas DataFrames by the Python API; nothing to reload.
    kind: Literal["movielens-100k", "csv", "dataframes"] = "movielens-100k"
    data_dir: Path | None = Field(default=None, description="Unpacked ml-100k directory")
    overviews_csv: Path | None = Field(default=None, description="CSV movie_id,overview")
    ratings_csv: Path | None = None
    items_csv: Path | None = None
    users_csv: Path | None = None
    columns: ColumnMapping = ColumnMapping()
    n_folds: int = Field(default=5, ge=2, description="CSV: folds f1..fN of a seeded split")
    split_seed: int = 0
    encoding: str = "utf-8"
    delimiter: str = ","

    @model_validator(mode="after")
    def _csv_needs_files(self) -> DatasetConfig:
        if self.kind == "csv" and (self.ratings_csv is None or self.items_csv is None):
            raise ValueError("a CSV dataset needs --ratings-csv and --items-csv")
        return self


# The five 80/20 folds of MovieLens 100K (u1..u5), the paper's table and every default.
MOVIELENS_FOLDS = ("u1", "u2", "u3", "u4", "u5")


class RunConfig(BaseModel):
    """What a run computes: data, folds, users, method sizes, prompts and model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetConfig = DatasetConfig()
    folds: tuple[str, ...] = MOVIELENS_FOLDS
    users: tuple[int, ...] | None = Field(default=None, description="None: every user")
    max_users: int | None = Field(default=None, ge=1, description="First N users per fold")
    profile_history: int = Field(default=40, ge=1, description="Last N training ratings")
    profile_batch: int = Field(default=10, ge=1, description="Ratings per profile step")
    recent_k: int = Field(default=10, ge=0, description="Recent rated items in rating prompts")
    overview_chars: int = Field(
        default=600, ge=0, description="Longest item overview in prompts; 0 leaves it out"
    )
    chunk_size: int | None = Field(
        default=None, ge=1, description="Test items per rating call; None: prompt set default"
    )
    max_reask: int = Field(default=2, ge=0, description="Re-asks for missing or invalid items")
    prompt_set: str = "lusifer"
    prompts_dir: Path | None = Field(default=None, description="Own directory of prompt sets")
    llm: LLMConfig
    batch: BatchConfig | None = Field(default=None, description="Set: run via the Batch API")

    @field_validator("folds", "users", mode="after")
    @classmethod
    def _each_once(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        # `--folds u1,u1` would count the fold twice in the mean ± std across folds.
        return None if values is None else tuple(dict.fromkeys(values))

    @model_validator(mode="after")
    def _sizes_make_sense(self) -> RunConfig:
        if self.profile_batch > self.profile_history:
            raise ValueError(
                f"profile batch {self.profile_batch} is larger than the profile history "
                f"{self.profile_history}: use a batch no larger than the history"
            )
        if not self.folds:
            raise ValueError("no fold selected: name at least one fold, e.g. --folds u1")
        return self


# Configuration fields whose `lusifer run` flag is not the field's own name.
_FLAG_OF_FIELD = {
    "timeout_s": "--llm-timeout",
    "price_prompt_per_mtok": "--price-prompt",
    "price_completion_per_mtok": "--price-completion",
    "rate_window_s": "--rate-window",
    "discount": "--batch-discount",
    "poll_s": "--batch-poll-s",
    "data_dir": "--data-dir",
    "overviews_csv": "--overviews",
}
# Fields the command line sets under the same name (`--max-users`, `--chunk-size`, ...).
_FLAG_FIELDS = {
    "base_url", "model", "temperature", "structured_output", "rpm", "tpm", "folds", "users",
    "max_users", "profile_history", "profile_batch", "recent_k", "overview_chars",
    "chunk_size", "max_reask", "prompt_set", "prompts_dir", "ratings_csv", "items_csv",
    "users_csv", "columns", "n_folds",
}  # fmt: skip


def _fix_of(field: str) -> str:
    """How to fix a field: its command-line flag where one sets it, else the value itself."""
    if field in _FLAG_OF_FIELD:
        return f"; fix {_FLAG_OF_FIELD[field]}"
    if field in _FLAG_FIELDS:
        return f"; fix --{field.replace('_', '-')}"
    return f"; fix the configuration value {field}"


def _first_error(err: ValidationError, what: str) -> ConfigurationError:
    first = err.errors()[0]
    where = " at " + ".".join(str(part) for part in first["loc"]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    # A model-level check names its own fix; a field's message names the field to fix.
    named = [str(part) for part in first["loc"] if isinstance(part, str)]
    fix = _fix_of(named[-1]) if named else ""
    return ConfigurationError(f"invalid {what}{where}: {message}{fix}")


def parse_run_config(data: object) -> RunConfig:
    """Validate a run configuration, turning pydantic's report into one clear line."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise _first_error(err, "run configuration") from None


def parse_dataset_config(data: object) -> DatasetConfig:
    """Validate a dataset description (as in a run configuration) into one clear line."""
    try:
        return DatasetConfig.model_validate(data)
    except ValidationError as err:
        raise _first_error(err, "dataset") from None
