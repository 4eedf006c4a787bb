"""Database tables: runs, jobs, their results, and every LLM call.

Unique keys make every write an upsert, so a job that runs twice writes the same rows once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Current time in UTC, timezone-aware (SQLModel stores TIMESTAMP WITH TIME ZONE)."""
    return datetime.now(UTC)


class JobState:
    """The states of a job; the database, not Celery, says where a job is."""

    PENDING = "pending"  # planned, waiting for its dependency
    QUEUED = "queued"  # sent to the broker
    RUNNING = "running"  # a worker holds it
    DONE = "done"
    FAILED = "failed"  # stored with its error and raw answer; the run goes on

    UNFINISHED = (PENDING, QUEUED, RUNNING)


class JobKind:
    """What a job computes."""

    PROFILE = "profile"
    RATING = "rating"


class Run(SQLModel, table=True):
    """One simulation run: its configuration, prompt set and data fingerprint."""

    id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    config_json: str = Field(sa_column=Column(Text, nullable=False))
    prompt_set: str
    prompt_version: str
    prompt_hash: str
    prompts_json: str = Field(sa_column=Column(Text, nullable=False))
    dataset_fingerprint: str
    status: str = "planned"  # planned | running | done | failed | capped
    error: str | None = Field(default=None, sa_column=Column(Text))
    # The cost cap (USD, None: none) and the spend of the run's new LLM calls at its prices.
    max_cost_usd: float | None = None
    spent_usd: float = 0.0


class ItemText(SQLModel, table=True):
    """What is known of an item, per dataset fingerprint: workers need no data files.

    The fields are stored rather than the finished ``item_info`` so that each run can choose
    how much of the overview its prompts carry.
    """

    dataset_fingerprint: str = Field(primary_key=True)
    item_id: int = Field(primary_key=True)
    title: str
    year: int | None = None
    genres: str = ""  # "|"-separated
    overview: str | None = Field(default=None, sa_column=Column(Text))


class UserText(SQLModel, table=True):
    """The ``user_info`` of a user, per dataset fingerprint."""

    dataset_fingerprint: str = Field(primary_key=True)
    user_id: int = Field(primary_key=True)
    info: str = Field(sa_column=Column(Text, nullable=False))


class Job(SQLModel, table=True):
    """A unit of work with a deterministic id: ``run/fold/user/kind[/chunk]``."""

    __table_args__ = (Index("ix_job_run_state", "run_id", "state"),)

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    fold: str
    user_id: int
    kind: str
    chunk: int = 0
    state: str = JobState.PENDING
    depends_on: str | None = None
    inputs_json: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    reasks: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    raw_output: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow)


class ProfileStep(SQLModel, table=True):
    """One intermediate profile of a user and the LLM's account of what changed."""

    __table_args__ = (UniqueConstraint("run_id", "fold", "user_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    fold: str
    user_id: int
    step: int
    item_ids_json: str
    profile: str = Field(sa_column=Column(Text, nullable=False))
    explanation: str = Field(sa_column=Column(Text, nullable=False))
    call_key: str


class SimulatedRating(SQLModel, table=True):
    """A test rating and, once simulated, the simulated user's answer.

    Planned with ``rating = NULL`` so coverage and "exactly once" are plain counts.
    """

    __table_args__ = (
        UniqueConstraint("run_id", "fold", "user_id", "item_id"),
        Index("ix_simrating_run_fold", "run_id", "fold"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: str
    fold: str
    user_id: int
    item_id: int
    true_rating: int
    rating: int | None = None
    job_id: str


class LLMCall(SQLModel, table=True):
    """A successful LLM call, content-addressed: the cache that makes reruns free."""

    key: str = Field(primary_key=True)
    model: str
    request_json: str = Field(sa_column=Column(Text, nullable=False))
    response_text: str = Field(sa_column=Column(Text, nullable=False))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class CallUse(SQLModel, table=True):
    """Which run and job used which call, and whether it came from the cache."""

    run_id: str = Field(primary_key=True)
    job_id: str = Field(primary_key=True)
    call_key: str = Field(primary_key=True)
    fold: str
    cached: bool = False
    retries: int = 0


class EnvSpec(SQLModel, table=True):
    """A simulated-user environment: its configuration and prompt set, content-addressed.

    Workers read it to step episodes, so it holds everything they need and no secret.
    """

    id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    config_json: str = Field(sa_column=Column(Text, nullable=False))
    prompts_json: str = Field(sa_column=Column(Text, nullable=False))
    dataset_fingerprint: str


class EnvEpisode(SQLModel, table=True):
    """One episode of the environment: a user and the tail of their training history."""

    id: str = Field(primary_key=True)
    spec_id: str = Field(index=True)
    user_id: int
    history_json: str = Field(sa_column=Column(Text, nullable=False))  # [[item, rating], ...]
    created_at: datetime = Field(default_factory=utcnow)


class EnvStepRequest(SQLModel, table=True):
    """A reset (step 0) or step of an episode: the request a worker runs, then its result.

    Its id is ``episode/step``; the queue carries that id and nothing else.
    """

    __table_args__ = (UniqueConstraint("episode_id", "step"),)

    id: str = Field(primary_key=True)
    episode_id: str = Field(index=True)
    step: int
    kind: str  # reset | step
    slate_json: str = "[]"  # item ids to rate, in slate order
    state: str = JobState.PENDING
    ratings_json: str | None = Field(default=None, sa_column=Column(Text))  # {"item": rating}
    missing_json: str | None = None
    reasks: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_kind: str | None = None  # transient | permanent | output | data
    raw_output: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow)


class EnvProfileUpdate(SQLModel, table=True):
    """The profile of an episode after a step (step 0: the initial profile), and why it changed."""

    __table_args__ = (UniqueConstraint("episode_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    episode_id: str = Field(index=True)
    step: int
    source: str  # run | built | update | kept
    item_ids_json: str = "[]"
    profile: str = Field(sa_column=Column(Text, nullable=False))
    explanation: str = Field(sa_column=Column(Text, nullable=False))
    call_key: str = ""
    created_at: datetime = Field(default_factory=utcnow)
