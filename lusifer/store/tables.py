"""Database tables: runs, jobs, their results, and every LLM call.

Unique keys make every write an upsert, so a job that runs twice writes the same rows once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum, nonmember

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Current time in UTC, timezone-aware (SQLModel stores TIMESTAMP WITH TIME ZONE)."""
    return datetime.now(UTC)


class JobState(StrEnum):
    """The states of a job; the database, not Celery, says where a job is."""

    PENDING = "pending"  # planned, waiting for its dependency
    QUEUED = "queued"  # sent to the broker
    RUNNING = "running"  # a worker holds it
    DONE = "done"
    FAILED = "failed"  # stored with its error and raw answer; the run goes on

    UNFINISHED = nonmember((PENDING, QUEUED, RUNNING))


class JobKind(StrEnum):
    """What a job computes."""

    PROFILE = "profile"
    RATING = "rating"
    # A collaborative-filtering baseline fitted on a stored fold split (``FoldSplit``). Its
    # jobs carry the pseudo run id ``baseline/<split digest>``: they belong to the data, not
    # to one run, so every report, comparison and score of that fold shares them.
    BASELINE = "baseline"


class RunStatus(StrEnum):
    """The states of a run: it runs until the coordinator says it ended, or a permanent error
    stops it."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CAPPED = "capped"  # stopped at its --max-cost; `resume --max-cost HIGHER` goes on

    ENDED = nonmember((DONE, FAILED))


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
    finished_at: datetime | None = None  # set when the status becomes done or failed
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

    __table_args__ = (
        Index("ix_job_run_state", "run_id", "state"),
        # The jobs the coordinator may send: a poll reads these rows and no others, however
        # many jobs of the run are done or still wait for their dependency.
        Index(
            "ix_job_ready",
            "run_id",
            postgresql_where=text("state = 'pending' AND NOT waiting"),
            sqlite_where=text("state = 'pending' AND NOT waiting"),
        ),
    )

    id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    fold: str
    user_id: int
    kind: str
    chunk: int = 0
    state: str = JobState.PENDING
    # Indexed: a finished profile job takes the rating jobs that wait for it.
    depends_on: str | None = Field(default=None, index=True)
    # True while the job it depends on is not done. Kept by the database (a trigger, see
    # migration 0006): the job that ends clears it on the jobs that waited for it, so readiness
    # is never recomputed over the done jobs of a run.
    waiting: bool = False
    inputs_json: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    reasks: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    raw_output: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow)


class JobTally(SQLModel, table=True):
    """How many jobs of a run are in each kind and state, as last folded from the deltas.

    Counting the job table grew with every job done (a third of a second at 633k jobs, every
    poll); the tally plus the deltas not folded yet cost the same at any size.
    """

    run_id: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    state: str = Field(primary_key=True)
    n: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class JobTallyDelta(SQLModel, table=True):
    """A change of ``JobTally`` written by the job table's triggers (PostgreSQL), one row per
    run, kind and state a statement changed: appended, so concurrent workers never wait on a
    counter row. The coordinator folds them into ``JobTally`` every poll."""

    # SQLite numbers rows only in a column declared INTEGER PRIMARY KEY.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    run_id: str = Field(index=True)
    kind: str
    state: str
    delta: int = Field(sa_column=Column(BigInteger, nullable=False))


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

    # The unique key serves (run, fold) lookups too: a second index on its first two columns
    # only tempted PostgreSQL's generic plans into scanning a whole fold per rating stored.
    __table_args__ = (UniqueConstraint("run_id", "fold", "user_id", "item_id"),)

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


class BatchLineOutcome:
    """What became of one line of a Batch API submission."""

    AWAITING = "awaiting"  # submitted, its batch not collected yet
    ANSWERED = "answered"  # a 200 answer, kept until a job stores it as an ordinary call
    TRANSIENT = "transient"  # 429, 5xx, expired or cancelled: submitted again next round
    PERMANENT = "permanent"  # 4xx: the job that asked fails


class LLMBatch(SQLModel, table=True):
    """A Batch API submission of a run: stored as soon as the provider accepts it, so a
    coordinator that dies re-attaches to it instead of paying for the same lines again."""

    id: str = Field(primary_key=True)  # the provider's batch id
    run_id: str = Field(index=True)
    round: int  # sequential rounds: profile steps, ratings, re-asks
    part: int  # a round past the API's limits is split into parts
    input_file_id: str
    status: str  # the provider's: validating | in_progress | ... | completed | expired ...
    collected: bool = False  # its output and error files are read into the lines
    output_file_id: str | None = None
    error_file_id: str | None = None
    line_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class LLMBatchLine(SQLModel, table=True):
    """One request of a batch (``custom_id`` is the call's cache key) and what came back."""

    __table_args__ = (Index("ix_llmbatchline_run_key", "run_id", "call_key"),)

    batch_id: str = Field(primary_key=True)
    call_key: str = Field(primary_key=True)
    run_id: str
    job_id: str  # the job whose request it is
    request_json: str = Field(sa_column=Column(Text, nullable=False))
    outcome: str = BatchLineOutcome.AWAITING
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    response_text: str | None = Field(default=None, sa_column=Column(Text))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class FoldSplit(SQLModel, table=True):
    """A fold's training and test ratings, stored once for the workers that fit baselines.

    Keyed by a digest of the ratings themselves, so any run, comparison or CSV score over the
    same fold finds it. One compressed numpy archive per fold (user and item ids as int32,
    ratings as int8, in the fold's order) rather than a row per rating: a worker always needs
    the whole split, never a slice of it, and an ML-100K fold is then 160 kB written and
    read in one statement instead of 100 000 rows and their index.
    """

    digest: str = Field(primary_key=True)
    fold: str
    dataset_fingerprint: str
    n_train: int
    n_test: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class BaselinePrediction(SQLModel, table=True):
    """One baseline job's continuous predictions of its split's test ratings, in test order.

    The job id names the split digest, method, seed and baseline version, so the row is
    written once however often the job runs. The predictions are one float64 array (compressed
    ``.npy``), aligned with the split's test ratings.
    """

    job_id: str = Field(primary_key=True)
    split_digest: str = Field(index=True)
    method: str
    seed: int
    version: str
    n: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fit_seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
