"""Planning on the real MovieLens 100K: users, batches, chunks, ids and what is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from coordinator.plan import plan_run, store_plan
from lusifer.core.config import RunConfig
from lusifer.core.errors import DataError
from lusifer.data import Dataset, load_movielens_100k
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.job_ids import ProfileInputs, RatingInputs
from lusifer.store.tables import Job, JobKind, SimulatedRating


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    import os

    root = os.environ.get("LUSIFER_DATA_DIR")
    if not root:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    return load_movielens_100k(Path(root) / "ml-100k", folds=("u1", "u2"))


def _config(**changes: object) -> RunConfig:
    base: dict[str, object] = {
        "folds": ("u1",),
        "max_users": 3,
        "llm": {"base_url": "http://x/v1", "model": "m"},
    }
    base.update(changes)
    return RunConfig.model_validate(base)


def test_profile_batches_are_the_last_40_training_ratings_oldest_first(dataset: Dataset) -> None:
    plan = plan_run("r", _config(), dataset, load_prompt_set("lusifer"))
    profile = next(j for j in plan.jobs if j["id"] == "r/u1/1/profile")
    batches = ProfileInputs.model_validate_json(profile["inputs_json"]).batches
    history = dataset.folds["u1"].train_by_user()[1]
    last40 = [(r.item_id, r.rating) for r in history[-40:]]
    assert [len(b) for b in batches] == [10, 10, 10, 10]
    assert [pair for batch in batches for pair in batch] == last40
    stamps = [r.timestamp for r in history[-40:]]
    assert stamps == sorted(stamps)


def test_rating_chunks_cover_every_test_item_once_with_recent_items(dataset: Dataset) -> None:
    prompts = load_prompt_set("lusifer")
    plan = plan_run("r", _config(), dataset, prompts)
    tests = dataset.folds["u1"].test_by_user()
    train = dataset.folds["u1"].train_by_user()
    for user in (1, 2, 3):
        jobs = [j for j in plan.jobs if j["user_id"] == user and j["kind"] == JobKind.RATING]
        items = [i for j in jobs for i in RatingInputs.model_validate_json(j["inputs_json"]).items]
        assert items == [r.item_id for r in tests[user]]
        assert all(
            len(RatingInputs.model_validate_json(j["inputs_json"]).items) <= prompts.chunk_size
            for j in jobs
        )
        recent = RatingInputs.model_validate_json(jobs[0]["inputs_json"]).recent
        assert recent == [(r.item_id, r.rating) for r in train[user][-10:]]
        assert all(j["depends_on"] == f"r/u1/{user}/profile" for j in jobs)
    assert len(plan.expected) == sum(len(tests[u]) for u in (1, 2, 3))


def test_paper_prompt_set_rates_one_item_per_call(dataset: Dataset) -> None:
    plan = plan_run("r", _config(max_users=1), dataset, load_prompt_set("paper"))
    n_tests = len(dataset.folds["u1"].test_by_user()[1])
    assert plan.count(JobKind.RATING) == n_tests


def test_unknown_users_and_folds_are_data_errors(dataset: Dataset) -> None:
    prompts = load_prompt_set("lusifer")
    with pytest.raises(DataError, match="unknown user ids"):
        plan_run("r", _config(users=(1, 99999), max_users=None), dataset, prompts)
    with pytest.raises(DataError, match="unknown folds"):
        plan_run("r", _config(folds=("u9",)), dataset, prompts)


def test_stored_plan_is_idempotent(dataset: Dataset, tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    create_tables(engine)
    plan = plan_run("r", _config(folds=("u1", "u2")), dataset, load_prompt_set("lusifer"))
    store_plan(engine, plan, dataset)
    store_plan(engine, plan, dataset)
    with Session(engine) as session:
        n_jobs = session.exec(select(func.count()).select_from(Job)).one()
        n_expected = session.exec(select(func.count()).select_from(SimulatedRating)).one()
        run_config = json.loads(session.exec(select(Job.inputs_json)).first() or "{}")
    assert n_jobs == len(plan.jobs)
    assert n_expected == len(plan.expected)
    assert run_config
