"""Planning a run: choose users, cut histories into batches and test items into chunks.

``plan_run`` checks the selection and counts its jobs but builds no row: ``store_plan`` makes
the rows a batch of users at a time while it writes them, all in one transaction (run, texts,
jobs, the expected test ratings), so a failed plan leaves nothing half-written and the
coordinator never holds every job of a large run at once (about 1 KB a job as a dict: 1 GB
for the million jobs of ML-1M with the ``paper`` prompt set). Only the chosen users' ratings
are sorted and turned into rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from coordinator.plan_rows import FoldRows, PlanBatch, fold_batches
from lusifer.core.config import RunConfig
from lusifer.core.errors import DataError
from lusifer.data import Dataset, Fold
from lusifer.method.prompts import PromptSet
from lusifer.store.engines import session_scope, upsert
from lusifer.store.runs import prompt_set_to_json, store_dataset_texts
from lusifer.store.tables import Job, JobKind, Run, SimulatedRating

BOTH_KINDS = frozenset({JobKind.PROFILE, JobKind.RATING})


@dataclass(frozen=True)
class FoldSelection:
    """The users of one fold that a plan simulates, and how many jobs and ratings they make."""

    name: str
    users: tuple[int, ...]  # ascending, each with training and test ratings
    skipped: tuple[int, ...]  # chosen, with test ratings but no training history
    rating_jobs: int
    expected: int


@dataclass
class Plan:
    """A run before it is stored: its row, its users per fold and how to make their jobs.

    ``kinds`` narrows the jobs made (the Python API plans profile jobs alone).
    """

    run: dict[str, Any]
    dataset: Dataset
    config: RunConfig
    chunk_size: int
    folds: list[FoldSelection]
    kinds: frozenset[str] = BOTH_KINDS

    @property
    def users_per_fold(self) -> dict[str, int]:
        """Users simulated in each fold."""
        return {f.name: len(f.users) for f in self.folds}

    @property
    def skipped_users(self) -> dict[str, list[int]]:
        """Chosen users left out of each fold for want of a training history."""
        return {f.name: list(f.skipped) for f in self.folds}

    def count(self, kind: str) -> int:
        """Number of jobs of a kind."""
        if kind not in self.kinds:
            return 0
        if kind == JobKind.PROFILE:
            return sum(len(f.users) for f in self.folds)
        return sum(f.rating_jobs for f in self.folds) if kind == JobKind.RATING else 0

    @property
    def job_count(self) -> int:
        """Number of jobs of every kind."""
        return sum(self.count(kind) for kind in self.kinds)

    @property
    def expected_ratings(self) -> int:
        """Number of test ratings the plan expects (none without rating jobs)."""
        return sum(f.expected for f in self.folds) if JobKind.RATING in self.kinds else 0

    def only_profiles(self) -> Plan:
        """The same plan with its profile jobs alone: no rating is expected."""
        return dataclasses.replace(self, kinds=frozenset({JobKind.PROFILE}))

    def batches(self) -> Iterator[PlanBatch]:
        """The plan's rows, a few thousand jobs at a time; a user's profile job comes before
        its rating jobs."""
        run_id = str(self.run["id"])
        for selection in self.folds:
            fold = self.dataset.folds[selection.name]
            train, test = fold.train, fold.test
            if _is_subset(self.config):
                # Only the chosen users' ratings are sorted and turned into rows.
                train, test = train.of_users(selection.users), test.of_users(selection.users)
            yield from fold_batches(
                FoldRows(run_id, selection.name, self.config, self.chunk_size, self.kinds),
                selection.users,
                train,
                test,
            )

    def jobs(self) -> Iterator[dict[str, Any]]:
        """Every job of the plan, batch after batch (estimates, small plans, tests)."""
        for batch in self.batches():
            yield from batch.jobs


def select_users(dataset: Dataset, fold: Fold, config: RunConfig) -> list[int]:
    """Users of a fold to simulate: those with test ratings, filtered by the configuration."""
    with_tests: list[int] = np.unique(fold.test.user_ids).tolist()
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


def _is_subset(config: RunConfig) -> bool:
    return config.users is not None or config.max_users is not None


def _select(dataset: Dataset, name: str, config: RunConfig, chunk_size: int) -> FoldSelection:
    fold = dataset.folds[name]
    chosen = np.asarray(select_users(dataset, fold, config), dtype=np.int64)
    train, test = fold.train, fold.test
    if _is_subset(config):
        train, test = train.of_users(chosen), test.of_users(chosen)
    has_history = np.isin(chosen, train.user_ids)
    users = chosen[has_history]
    # Test ratings per chosen user: every chosen user has some (that is how they were chosen).
    ids, counts = np.unique(test.user_ids, return_counts=True)
    per_user = counts[np.searchsorted(ids, users)] if len(users) else counts[:0]
    return FoldSelection(
        name=name,
        users=tuple(users.tolist()),
        skipped=tuple(chosen[~has_history].tolist()),
        rating_jobs=int((-(-per_user // chunk_size)).sum()),
        expected=int(per_user.sum()),
    )


def plan_run(run_id: str, config: RunConfig, dataset: Dataset, prompts: PromptSet) -> Plan:
    """Check a configuration against a dataset and count the jobs it makes (none is built)."""
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
        dataset=dataset,
        config=config,
        chunk_size=chunk_size,
        folds=[_select(dataset, name, config, chunk_size) for name in config.folds],
    )
    if not plan.job_count:
        raise DataError(
            "the selection has no user with both training and test ratings; "
            "check --folds, --users and --max-users"
        )
    return plan


def store_plan(engine: Engine, plan: Plan, dataset: Dataset) -> None:
    """Write the run, the texts its jobs need, its jobs and its expected ratings at once."""
    with session_scope(engine) as session:
        upsert(session, Run, [plan.run], keys=["id"])
        store_dataset_texts(session, dataset)
        keys = ["run_id", "fold", "user_id", "item_id"]
        # Made while written: one batch of rows is alive at a time, in the one transaction.
        for batch in plan.batches():
            upsert(session, Job, batch.jobs, keys=["id"])
            upsert(session, SimulatedRating, batch.expected, keys=keys)
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
        f"{plan.expected_ratings} test ratings ({folds})"
    )


def config_of(run_json: str) -> dict[str, Any]:
    """The stored configuration of a run as a dict."""
    value: dict[str, Any] = json.loads(run_json)
    return value
