"""Planning a run: choose users, cut histories into batches and test items into chunks.

The plan is written in one transaction (run, texts, jobs, the expected test ratings), so a
failed plan leaves nothing half-written.
"""

from __future__ import annotations

import json
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


@dataclass
class Plan:
    """Rows that make a run, before they are stored."""

    run: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    expected: list[dict[str, Any]] = field(default_factory=list)
    users_per_fold: dict[str, int] = field(default_factory=dict)
    skipped_users: dict[str, list[int]] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        """Number of jobs of a kind."""
        return sum(1 for job in self.jobs if job["kind"] == kind)


def select_users(dataset: Dataset, fold: Fold, config: RunConfig) -> list[int]:
    """Users of a fold to simulate: those with test ratings, filtered by the configuration."""
    with_tests = sorted(fold.test_by_user())
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
        }
    )
    for fold_name in config.folds:
        fold = dataset.folds[fold_name]
        train, test = fold.train_by_user(), fold.test_by_user()
        users = select_users(dataset, fold, config)
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
        plan.expected.extend(
            {
                "run_id": run_id,
                "fold": fold,
                "user_id": user_id,
                "item_id": r.item_id,
                "true_rating": r.rating,
                "job_id": job_id,
            }
            for r in part
        )


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
        "inputs_json": inputs_json,
    }


def store_plan(engine: Engine, plan: Plan, dataset: Dataset) -> None:
    """Write the run, the texts its jobs need, its jobs and its expected ratings at once."""
    with session_scope(engine) as session:
        upsert(session, Run, [plan.run], keys=["id"])
        store_dataset_texts(session, dataset)
        upsert(session, Job, plan.jobs, keys=["id"])
        upsert(
            session, SimulatedRating, plan.expected, keys=["run_id", "fold", "user_id", "item_id"]
        )
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
