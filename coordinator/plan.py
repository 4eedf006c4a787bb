"""Planning a run: choose users, cut histories into batches and test items into chunks.

The plan is written in one transaction (run, texts, jobs, the expected test ratings), so a
failed plan leaves nothing half-written.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from lusifer.core.config import RunConfig
from lusifer.core.errors import DataError
from lusifer.data import Dataset, Fold, Rating
from lusifer.method.history import history_batches
from lusifer.method.prompts import PromptSet
from lusifer.store.engines import session_scope, upsert
from lusifer.store.job_ids import ProfileInputs, RatingInputs, profile_job_id, rating_job_id
from lusifer.store.runs import prompt_set_to_json, store_dataset_texts
from lusifer.store.tables import (
    Job,
    JobKind,
    JobState,
    Run,
    SimulatedRating,
)


class ExpectedRatings:
    """The test ratings a run expects, as three flat int32 arrays (12 bytes a rating).

    A dict per rating cost about 0.4 KB: 2 GB for the 5 M ratings of a large dataset. Each
    rating points at its rating job (an index into ``jobs``), which names its fold, user and
    id; rows are made while they are stored, a batch at a time.
    """

    def __init__(self, run_id: str, jobs: list[dict[str, Any]] | None = None) -> None:
        self.run_id = run_id
        self._jobs = jobs if jobs is not None else []
        self._job_index: array[int] = array("i")
        self._items: array[int] = array("i")
        self._ratings: array[int] = array("i")

    def add(self, job_index: int, part: list[Rating]) -> None:
        """Expect ``part``, the test ratings of the rating job at ``jobs[job_index]``."""
        self._job_index.extend([job_index] * len(part))
        self._items.extend(r.item_id for r in part)
        self._ratings.extend(r.rating for r in part)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, item_id, rating in zip(self._job_index, self._items, self._ratings, strict=True):
            job = self._jobs[index]
            yield {
                "run_id": self.run_id,
                "fold": job["fold"],
                "user_id": job["user_id"],
                "item_id": item_id,
                "true_rating": rating,
                "job_id": job["id"],
            }


def batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """``rows`` in lists of at most ``size``: only one list of dicts is alive at a time."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Plan:
    """Rows that make a run, before they are stored."""

    run: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    expected: ExpectedRatings = field(default_factory=lambda: ExpectedRatings(""))
    users_per_fold: dict[str, int] = field(default_factory=dict)
    skipped_users: dict[str, list[int]] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        """Number of jobs of a kind."""
        return sum(1 for job in self.jobs if job["kind"] == kind)


def select_users(dataset: Dataset, fold: Fold, config: RunConfig) -> list[int]:
    """Users of a fold to simulate: those with test ratings, filtered by the configuration."""
    with_tests = sorted({r.user_id for r in fold.test})
    if config.users is not None:
        unknown = [u for u in config.users if u not in dataset.users]
        if unknown:
            raise DataError(
                f"unknown user ids {unknown[:10]} (the dataset has {len(dataset.users)} users); "
                "pass ids that exist in u.user"
            )
        present = set(with_tests)
        with_tests = [u for u in sorted(config.users) if u in present]
    if config.max_users is not None:
        with_tests = with_tests[: config.max_users]
    return with_tests


def _only(fold: Fold, users: list[int], config: RunConfig) -> Fold:
    """The fold restricted to ``users``: a subset's plan holds its own users' ratings only."""
    if config.users is None and config.max_users is None:
        return fold
    wanted = set(users)
    return Fold(
        fold.name,
        tuple(r for r in fold.train if r.user_id in wanted),
        tuple(r for r in fold.test if r.user_id in wanted),
    )


def plan_run(run_id: str, config: RunConfig, dataset: Dataset, prompts: PromptSet) -> Plan:
    """Turn a dataset and a configuration into jobs and expected ratings."""
    missing = [f for f in config.folds if f not in dataset.folds]
    if missing:
        raise DataError(f"unknown folds {missing}; choose from {', '.join(sorted(dataset.folds))}")
    chunk_size = config.chunk_size or prompts.chunk_size
    plan = Plan(
        run={
            "id": run_id,
            "config_json": config.model_dump_json(),
            "prompt_set": prompts.name,
            "prompt_version": prompts.version,
            "prompt_hash": prompts.content_hash,
            "prompts_json": prompt_set_to_json(prompts),
            "dataset_fingerprint": dataset.fingerprint,
            "status": "planned",
        },
    )
    plan.expected = ExpectedRatings(run_id, plan.jobs)
    for fold_name in config.folds:
        fold = dataset.folds[fold_name]
        users = select_users(dataset, fold, config)
        subset = _only(fold, users, config)
        train, test = subset.train_by_user(), subset.test_by_user()
        plan.skipped_users[fold_name] = [u for u in users if not train.get(u)]
        users = [u for u in users if train.get(u)]
        plan.users_per_fold[fold_name] = len(users)
        for user_id in users:
            _plan_user(
                plan, run_id, fold_name, user_id, train[user_id], test[user_id], config, chunk_size
            )
    if not plan.jobs:
        raise DataError(
            "the selection has no user with both training and test ratings; "
            "check --folds, --users and --max-users"
        )
    return plan


def _plan_user(
    plan: Plan,
    run_id: str,
    fold: str,
    user_id: int,
    history: list[Rating],
    tests: list[Rating],
    config: RunConfig,
    chunk_size: int,
) -> None:
    profile_id = profile_job_id(run_id, fold, user_id)
    profile_inputs = ProfileInputs(
        batches=history_batches(
            [(r.item_id, r.rating) for r in history], config.profile_history, config.profile_batch
        )
    )
    plan.jobs.append(
        _job(
            profile_id,
            run_id,
            fold,
            user_id,
            JobKind.PROFILE,
            0,
            None,
            profile_inputs.model_dump_json(),
        )
    )
    recent = [(r.item_id, r.rating) for r in history[-config.recent_k :]] if config.recent_k else []
    for chunk, start in enumerate(range(0, len(tests), chunk_size)):
        part = tests[start : start + chunk_size]
        job_id = rating_job_id(run_id, fold, user_id, chunk)
        inputs = RatingInputs(recent=recent, items=[r.item_id for r in part])
        plan.jobs.append(
            _job(
                job_id,
                run_id,
                fold,
                user_id,
                JobKind.RATING,
                chunk,
                profile_id,
                inputs.model_dump_json(),
            )
        )
        plan.expected.add(len(plan.jobs) - 1, part)


def _job(
    job_id: str,
    run_id: str,
    fold: str,
    user_id: int,
    kind: str,
    chunk: int,
    depends_on: str | None,
    inputs_json: str,
) -> dict[str, Any]:
    return {
        "id": job_id,
        "run_id": run_id,
        "fold": fold,
        "user_id": user_id,
        "kind": kind,
        "chunk": chunk,
        "state": JobState.PENDING,
        "depends_on": depends_on,
        "waiting": depends_on is not None,
        "inputs_json": inputs_json,
    }


def store_plan(engine: Engine, plan: Plan, dataset: Dataset) -> None:
    """Write the run, the texts its jobs need, its jobs and its expected ratings at once."""
    with session_scope(engine) as session:
        upsert(session, Run, [plan.run], keys=["id"])
        store_dataset_texts(session, dataset)
        upsert(session, Job, plan.jobs, keys=["id"])
        keys = ["run_id", "fold", "user_id", "item_id"]
        for batch in batches(iter(plan.expected), 50_000):
            upsert(session, SimulatedRating, batch, keys=keys)
    if engine.dialect.name == "postgresql":
        # Fresh statistics for the rows just written: the workers' prepared statements get
        # planned against them, not against an empty table's guesses.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE job, simulatedrating"))


def describe_plan(plan: Plan) -> str:
    """One line saying what a plan holds."""
    folds = ", ".join(f"{f}: {n} users" for f, n in plan.users_per_fold.items())
    return (
        f"{plan.count(JobKind.PROFILE)} profile jobs, {plan.count(JobKind.RATING)} rating jobs, "
        f"{len(plan.expected)} test ratings ({folds})"
    )


def config_of(run_json: str) -> dict[str, Any]:
    """The stored configuration of a run as a dict."""
    value: dict[str, Any] = json.loads(run_json)
    return value
