"""Process settings: where the broker, database and LLM key are. One object, cached.

Settings describe *this process's environment* (secrets, service addresses). What a run does
(folds, users, model, prompt set) is the run configuration in ``lusifer.core.config``, stored with
the run in the database so that workers on other hosts read the same thing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Environment of a Lusifer process (prefix ``LUSIFER_``, ``.env`` supported)."""

    model_config = SettingsConfigDict(env_prefix="LUSIFER_", env_file=".env", extra="ignore")

    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://, rediss://). Unset: embedded Redis."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Unset: the work dir's embedded PostgreSQL.",
    )
    queue: str = Field(default="lusifer", description="Celery queue the jobs go to.")
    llm_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LUSIFER_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key of the LLM endpoint; only workers need it; never stored.",
    )
    llm_base_url: str | None = Field(default=None, description="Default --base-url.")
    llm_model: str | None = Field(default=None, description="Default --model.")
    local_llm_url: str | None = Field(
        default=None,
        description="Set by local mode for its workers: where the local model server listens.",
    )
    local_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads of the local model server (unset: one per core). llama.cpp's "
        "threads wait for each other, so on a busy machine 1 thread is often faster.",
    )
    data_dir: Path | None = Field(
        default=None, description="Directory holding ml-100k/ (and tmdb/); else downloaded."
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "lusifer", description="Downloads and local state."
    )
    work_dir: Path = Field(
        default=Path("lusifer-runs"),
        description="Local mode: the embedded database (pg/), logs, sockets.",
    )
    visibility_timeout_s: int = Field(
        default=6 * 3600, description="Redis visibility timeout; longer than any job."
    )
    job_lease_s: int = Field(
        default=900,
        description="A running job whose heartbeat (every LLM call) is older than this is "
        "taken to be orphaned by a dead worker and may be claimed again.",
    )
    requeue_grace_s: int = Field(
        default=120,
        description="A queued job nobody claimed for this long whose message the broker no "
        "longer holds (a restart without persistence, a killed worker) is sent again.",
    )
    worker_concurrency: int = Field(
        default=80,
        ge=1,
        description="Threads per worker process. A job mostly waits on its LLM call, so one "
        "process on one core keeps about this many calls in flight; 80 leaves room for the "
        "milliseconds a job spends on the database between calls, so at least 64 always are.",
    )
    worker_max_held: int | None = Field(
        default=None,
        ge=0,
        description="Rating jobs a worker process holds beside those it runs: a profile job "
        "that ends done takes its user's rating jobs along only while the process holds fewer "
        "(unset: 4 x its concurrency; 0: never). The others go through the queue, so a large "
        "run never piles up in one worker's memory.",
    )
    db_pool_size: int = Field(
        default=5,
        ge=1,
        description="Database connections a process keeps. Sessions are short and none is "
        "held across an LLM call, so a few serve many threads (PostgreSQL allows ~100).",
    )
    db_max_overflow: int = Field(
        default=5, ge=0, description="Extra database connections a process opens at peaks."
    )
    job_max_retries: int = Field(
        default=8, description="Celery retries of a job after transient LLM errors."
    )
    db_outage_s: float = Field(
        default=90.0,
        gt=0,
        description="How long workers and the coordinator ride out a database that refuses "
        "or drops connections, with backoff, before they give up (resume continues).",
    )
    stall_warn_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds without any job moving before the coordinator says why it waits.",
    )
    stall_give_up_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds without any worker on the run's queue before the coordinator "
        "stops (exit 6; `lusifer resume` continues).",
    )
    job_max_attempts: int = Field(
        default=12,
        ge=1,
        description="Times a job is handed out (retry, lease expiry, re-sent message) before "
        "it is failed with its last error: a job that kills its worker cannot block its run.",
    )
    job_max_unexpected: int = Field(
        default=3,
        ge=1,
        description="Attempts of a job that raised an error nobody anticipated (a bug, an "
        "answer the database refuses) before it is failed with that error.",
    )
    max_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="Cap of any wait a server asks for (Retry-After) and of the shared "
        "limiter's pauses: one absurd header cannot stop a run or later runs.",
    )
    llm_attempts: int = Field(default=5, description="In-call retries of transient errors.")
    llm_backoff_max_s: float = Field(default=30.0, description="Cap of one backoff wait.")
    task_events: bool = Field(
        default=True,
        description="Celery task events for Flower (job ids only); off saves ~5 % worker CPU.",
    )
    log_level: str = Field(default="WARNING", description="Log level of Lusifer processes.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
