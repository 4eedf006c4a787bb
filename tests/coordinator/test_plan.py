"""Planning on the real MovieLens 100K: users, batches, chunks, ids and what is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from coordinator import plan_rows
from coordinator.plan import Plan, describe_plan, plan_run, store_plan
from coordinator.plan_rows import PlanBatch
from lusifer.core.config import RunConfig
from lusifer.core.errors import DataError
from lusifer.data import Dataset, Ratings, load_movielens_100k
from lusifer.data.ratings import UserGroups
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.job_ids import ProfileInputs, RatingInputs
from lusifer.store.tables import Job, JobKind, Run, SimulatedRating


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
    profile = next(j for j in plan.jobs() if j["id"] == "r/u1/1/profile")
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
        jobs = [j for j in plan.jobs() if j["user_id"] == user and j["kind"] == JobKind.RATING]
        items = [i for j in jobs for i in RatingInputs.model_validate_json(j["inputs_json"]).items]
        assert items == [r.item_id for r in tests[user]]
        assert all(
            len(RatingInputs.model_validate_json(j["inputs_json"]).items) <= prompts.chunk_size
            for j in jobs
        )
        recent = RatingInputs.model_validate_json(jobs[0]["inputs_json"]).recent
        assert recent == [(r.item_id, r.rating) for r in train[user][-10:]]
        assert all(j["depends_on"] == f"r/u1/{user}/profile" for j in jobs)
    assert plan.expected_ratings == sum(len(tests[u]) for u in (1, 2, 3))


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
    assert n_jobs == plan.job_count == len(list(plan.jobs()))
    assert n_expected == plan.expected_ratings
    assert run_config


def test_counts_match_the_rows_made_batch_by_batch(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_rows, "JOBS_PER_BATCH", 50)
    plan = plan_run(
        "r", _config(folds=("u1", "u2"), max_users=40), dataset, load_prompt_set("paper")
    )
    batches = list(plan.batches())
    # A batch closes at the first user that takes it past the bound: one user's jobs at most.
    most = max(n for n in _rating_jobs_per_user(plan)) + 1
    assert len(batches) > 2 and all(len(b.jobs) < 50 + most for b in batches)
    jobs = [job for batch in batches for job in batch.jobs]
    assert len(jobs) == len({j["id"] for j in jobs}) == plan.job_count
    assert plan.count(JobKind.PROFILE) == sum(j["kind"] == JobKind.PROFILE for j in jobs) == 80
    assert sum(len(b.expected) for b in batches) == plan.expected_ratings
    # A user's profile job comes before the rating jobs that wait for it.
    seen: set[str] = set()
    for job in jobs:
        assert job["depends_on"] is None or job["depends_on"] in seen
        seen.add(job["id"])
    assert "80 profile jobs" in describe_plan(plan)


def _rating_jobs_per_user(plan: Plan) -> list[int]:
    counts: dict[tuple[str, int], int] = {}
    for job in plan.jobs():
        key = (job["fold"], job["user_id"])
        counts[key] = counts.get(key, 0) + (job["kind"] == JobKind.RATING)
    return list(counts.values())


def test_only_the_chosen_users_ratings_are_grouped(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    grouped = Ratings.grouped

    def spy(self: Ratings, *, chronological: bool) -> UserGroups:
        sizes.append(len(self))
        return grouped(self, chronological=chronological)

    monkeypatch.setattr(Ratings, "grouped", spy)
    plan = plan_run("r", _config(users=(1, 2)), dataset, load_prompt_set("lusifer"))
    assert sizes == []  # planning counts; rows are made when they are stored
    list(plan.batches())
    fold = dataset.folds["u1"]
    mine = [r for r in [*fold.train, *fold.test] if r.user_id in (1, 2)]
    assert sum(sizes) == len(mine) < len(fold.train) // 100


def test_profiles_only_plan_expects_no_rating(dataset: Dataset) -> None:
    plan = plan_run("r", _config(), dataset, load_prompt_set("lusifer")).only_profiles()
    jobs = list(plan.jobs())
    assert {j["kind"] for j in jobs} == {JobKind.PROFILE} and len(jobs) == plan.job_count == 3
    assert plan.expected_ratings == 0 and plan.count(JobKind.RATING) == 0
    assert all(not b.expected for b in plan.batches())


def test_a_plan_that_fails_while_stored_leaves_nothing_written(
    dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    create_tables(engine)
    monkeypatch.setattr(plan_rows, "JOBS_PER_BATCH", 5)
    plan = plan_run("r", _config(max_users=30), dataset, load_prompt_set("lusifer"))
    made = plan.batches

    def failing() -> Iterator[PlanBatch]:
        for n, batch in enumerate(made()):
            if n == 3:  # some batches are already written in the transaction
                raise DataError("disk full")
            yield batch

    monkeypatch.setattr(plan, "batches", failing)
    with pytest.raises(DataError, match="disk full"):
        store_plan(engine, plan, dataset)
    with Session(engine) as session:
        for table in (Run, Job, SimulatedRating):
            assert session.exec(select(func.count()).select_from(table)).one() == 0
