"""Baseline jobs on a stored split: the split round-trips, a job writes once, versions match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from lusifer.core.errors import DataError
from lusifer.data import Fold, Rating
from lusifer.evaluate.baseline_jobs import (
    BaselineInputs,
    baseline_job_id,
    execute_baseline_job,
    fold_digest,
    load_split,
    plan_baseline_jobs,
    stored_predictions,
)
from lusifer.evaluate.baselines import BASELINE_VERSION, RatingTriples, fold_predictions
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import BaselinePrediction, FoldSplit, Job, JobKind, JobState


def small_fold(name: str = "f1", n_users: int = 12, n_items: int = 15, seed: int = 0) -> Fold:
    """A fold of structured random ratings: user and item effects plus noise."""
    rng = np.random.default_rng(seed)
    user_bias, item_bias = rng.normal(0, 0.7, n_users), rng.normal(0, 0.7, n_items)
    ratings = [
        Rating(u + 1, i + 1, int(np.clip(np.rint(3.5 + user_bias[u] + item_bias[i]), 1, 5)), 0)
        for u in range(n_users)
        for i in range(n_items)
        if rng.random() < 0.6
    ]
    in_test = rng.random(len(ratings)) < 0.2
    return Fold.of(
        name,
        train=tuple(r for r, t in zip(ratings, in_test, strict=True) if not t),
        test=tuple(r for r, t in zip(ratings, in_test, strict=True) if t),
    )


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    create_tables(engine)
    return engine


def stored_job(engine: Engine, job_id: str) -> Job:
    """The job row as stored now."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


def test_plan_stores_the_split_once_and_one_job_per_method(engine: Engine) -> None:
    fold = small_fold()
    ids = plan_baseline_jobs(engine, fold, "fp", ["global_mean", "svd"], seed=3)
    again = plan_baseline_jobs(engine, fold, "fp", ["global_mean", "svd"], seed=3)
    digest = fold_digest(fold)
    assert (
        ids
        == again
        == [
            f"baseline/{digest}/global_mean/s3/v{BASELINE_VERSION}",
            f"baseline/{digest}/svd/s3/v{BASELINE_VERSION}",
        ]
    )
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(FoldSplit)).one() == 1
        jobs = session.exec(select(Job)).all()
    assert [(j.kind, j.state, j.fold) for j in jobs] == [
        (JobKind.BASELINE, JobState.PENDING, "f1")
    ] * 2
    inputs = BaselineInputs.model_validate_json(jobs[1].inputs_json)
    assert (inputs.split_digest, inputs.method, inputs.seed) == (digest, "svd", 3)


def test_the_stored_split_is_the_fold(engine: Engine) -> None:
    fold = small_fold()
    plan_baseline_jobs(engine, fold, "fp", ["global_mean"], seed=0)
    train, users, items = load_split(engine, fold_digest(fold))
    expected = RatingTriples.of(fold.train)
    for got, want in zip(
        (train.users, train.items, train.ratings),
        (expected.users, expected.items, expected.ratings),
        strict=True,
    ):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert users.tolist() == [r.user_id for r in fold.test]
    assert items.tolist() == [r.item_id for r in fold.test]
    with pytest.raises(DataError, match="not in the database"):
        load_split(engine, "0" * 20)


@pytest.mark.parametrize("method", ["baseline_only", "svd", "als", "knn_baseline"])
def test_a_job_predicts_what_the_process_predicts_and_writes_once(
    engine: Engine, method: str
) -> None:
    fold = small_fold()
    (job_id,) = plan_baseline_jobs(engine, fold, "fp", [method], seed=0)
    execute_baseline_job(engine, stored_job(engine, job_id))
    first = stored_predictions(engine, fold, [method], seed=0)[method]
    execute_baseline_job(engine, stored_job(engine, job_id))  # a redelivered job
    with Session(engine) as session:
        rows = session.exec(select(BaselinePrediction)).all()
    assert len(rows) == 1 and rows[0].n == len(fold.test) and rows[0].method == method
    assert np.array_equal(first, fold_predictions(fold, method, seed=0))


def test_stored_predictions_only_what_is_there(engine: Engine, tmp_path: Path) -> None:
    fold = small_fold()
    ids = plan_baseline_jobs(engine, fold, "fp", ["global_mean", "svd"], seed=0)
    execute_baseline_job(engine, stored_job(engine, ids[0]))
    assert list(stored_predictions(engine, fold, ["global_mean", "svd"], seed=0)) == ["global_mean"]
    assert stored_predictions(engine, fold, ["global_mean"], seed=1) == {}
    assert stored_predictions(engine, small_fold(seed=1), ["global_mean"], seed=0) == {}
    # A database from before baselines ran as jobs has no such table: nothing is stored.
    bare = get_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    assert stored_predictions(bare, fold, ["global_mean"], seed=0) == {}


def test_a_job_of_another_baseline_version_is_refused(engine: Engine) -> None:
    fold = small_fold()
    (job_id,) = plan_baseline_jobs(engine, fold, "fp", ["global_mean"], seed=0)
    job = stored_job(engine, job_id)
    inputs = BaselineInputs.model_validate_json(job.inputs_json)
    job.inputs_json = inputs.model_copy(update={"version": "0"}).model_dump_json()
    with pytest.raises(DataError, match="baseline version 0"):
        execute_baseline_job(engine, job)


def test_job_ids_name_split_method_seed_and_version() -> None:
    assert baseline_job_id("abc", "svd", 7) == f"baseline/abc/svd/s7/v{BASELINE_VERSION}"
