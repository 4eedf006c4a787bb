"""The rows of a plan, made a few thousand jobs at a time from a fold's rating columns.

A user's profile job reads the last ``profile_history`` training ratings, oldest first; each
rating job asks up to ``chunk_size`` test items (by item id) with the user's ``recent_k`` last
training ratings, and expects their real ratings. Ids are deterministic (run, fold, user, kind,
chunk), so a plan made again makes the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lusifer.core.config import RunConfig
from lusifer.data import Ratings
from lusifer.data.ratings import UserGroups
from lusifer.method.history import history_batches
from lusifer.store.job_ids import ProfileInputs, RatingInputs, profile_job_id, rating_job_id
from lusifer.store.tables import JobKind, JobState

# Rows made (and written) at a time: a few MB of dicts, whatever the size of the run.
JOBS_PER_BATCH = 5_000


@dataclass
class PlanBatch:
    """The rows of some users of a plan: their jobs and the test ratings they expect."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    expected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FoldRows:
    """What the rows of one fold of a run are made with."""

    run_id: str
    fold: str
    config: RunConfig
    chunk_size: int
    kinds: frozenset[str]


def fold_batches(
    how: FoldRows, users: tuple[int, ...], train: Ratings, test: Ratings
) -> Iterator[PlanBatch]:
    """The rows of ``users`` (each with training and test ratings), batch after batch."""
    history = train.grouped(chronological=True)
    tests = test.grouped(chronological=False)
    batch = PlanBatch()
    for user_id in users:
        _plan_user(how, batch, user_id, history, tests)
        if len(batch.jobs) >= JOBS_PER_BATCH:
            yield batch
            batch = PlanBatch()
    if batch.jobs:
        yield batch


def _plan_user(
    how: FoldRows, batch: PlanBatch, user_id: int, history: UserGroups, tests: UserGroups
) -> None:
    run_id, fold, config = how.run_id, how.fold, how.config
    past = history.pairs(_position(history, user_id))
    profile_id = profile_job_id(run_id, fold, user_id)
    if JobKind.PROFILE in how.kinds:
        inputs = ProfileInputs(
            batches=history_batches(past, config.profile_history, config.profile_batch)
        )
        batch.jobs.append(
            _job(profile_id, how, user_id, JobKind.PROFILE, 0, None, inputs.model_dump_json())
        )
    if JobKind.RATING not in how.kinds:
        return
    recent = past[-config.recent_k :] if config.recent_k else []
    asked = tests.pairs(_position(tests, user_id))
    for chunk, start in enumerate(range(0, len(asked), how.chunk_size)):
        part = asked[start : start + how.chunk_size]
        job_id = rating_job_id(run_id, fold, user_id, chunk)
        rating = RatingInputs(recent=recent, items=[item for item, _ in part])
        batch.jobs.append(
            _job(job_id, how, user_id, JobKind.RATING, chunk, profile_id, rating.model_dump_json())
        )
        batch.expected.extend(
            {
                "run_id": run_id,
                "fold": fold,
                "user_id": user_id,
                "item_id": item,
                "true_rating": value,
                "job_id": job_id,
            }
            for item, value in part
        )


def _position(groups: UserGroups, user_id: int) -> int:
    k = groups.index(user_id)
    assert k is not None, f"user {user_id} was selected with ratings here"
    return k


def _job(
    job_id: str,
    how: FoldRows,
    user_id: int,
    kind: str,
    chunk: int,
    depends_on: str | None,
    inputs_json: str,
) -> dict[str, Any]:
    return {
        "id": job_id,
        "run_id": how.run_id,
        "fold": how.fold,
        "user_id": user_id,
        "kind": kind,
        "chunk": chunk,
        "state": JobState.PENDING,
        "depends_on": depends_on,
        "waiting": depends_on is not None,
        "inputs_json": inputs_json,
    }
