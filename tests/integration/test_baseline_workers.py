"""Baselines as jobs on real Celery workers over real Redis and PostgreSQL.

A run over a small generic CSV dataset is stored in PostgreSQL; `lusifer report RUN --json`
in cluster mode stores the fold's split, queues one job id per method, and the worker's
predictions equal what this process fits for the same fold and seed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, func, select

from lusifer.core.config import parse_run_config
from lusifer.core.settings import Settings
from lusifer.data import Dataset
from lusifer.evaluate.baseline_jobs import baseline_job_id, fold_digest, stored_predictions
from lusifer.evaluate.baselines import BASELINES, fold_predictions, to_scale
from lusifer.evaluate.metrics import rmse
from lusifer.queue import make_celery, send_jobs
from lusifer.store.engines import create_tables, get_engine, session_scope
from lusifer.store.tables import BaselinePrediction, FoldSplit, Job, JobState, SimulatedRating
from tests.coordinator.eval_fixtures import finished_run, write_csv_dataset
from tests.integration.services import celery_workers, postgres_schema, run_cli, service_env
from tests.integration.test_distributed_run import BrokerTap

pytestmark = pytest.mark.integration

RUN_ID = "bl-run"
# Every method but SVD++, whose fit on the worker would only repeat SVD's story slowly.
METHODS = tuple(m for m in BASELINES if m != "svdpp")


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema("lusifer_bl") as url:
        yield url


def store_run(database_url: str, root: Path, dataset: Dataset) -> list[SimulatedRating]:
    """A finished run over fold f1 of the CSV dataset with made-up simulated ratings."""
    engine = get_engine(database_url)
    create_tables(engine)
    config = parse_run_config(
        {
            "dataset": {
                "kind": "csv",
                "ratings_csv": root / "ratings.csv",
                "items_csv": root / "items.csv",
            },
            "folds": ["f1"],
            "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "stub-model"},
        }
    )
    rows = [
        SimulatedRating(
            run_id=RUN_ID,
            fold="f1",
            user_id=r.user_id,
            item_id=r.item_id,
            true_rating=r.rating,
            rating=min(5, r.rating + (r.item_id % 2)),
            job_id=f"{RUN_ID}/f1/{r.user_id}/rating/0",
        )
        for r in dataset.folds["f1"].test
        if r.user_id <= 25  # the run answered some users only
    ]
    with Session(engine) as session:
        session.add(finished_run(RUN_ID, config, dataset.fingerprint))
        session.add_all(rows)
        session.commit()
        for row in rows:
            session.refresh(row)
    return rows


def test_workers_fit_the_baselines_of_a_report_exactly_as_this_process(
    database_url: str, tmp_path: Path
) -> None:
    dataset = write_csv_dataset(tmp_path)
    answered = store_run(database_url, tmp_path, dataset)
    fold = dataset.folds["f1"]
    queue = f"it-bl-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None, LUSIFER_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    with celery_workers(env, tmp_path, count=1, threads=2) as workers, BrokerTap() as tap:
        result = run_cli(
            ["report", RUN_ID, "--json", str(out), "--baselines", ",".join(METHODS),
             "--resamples", "50"],
            env,
            tmp_path,
            timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr + workers.log_text()[-3000:]
    # Only job ids travelled on the queue.
    expected_ids = {baseline_job_id(fold_digest(fold), m, 0) for m in METHODS}
    assert {tuple(args) for args in tap.job_arguments(queue)} == {(i,) for i in expected_ids}
    engine = get_engine(database_url)
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.id).in_(expected_ids))).all()
        assert {j.state for j in jobs} == {JobState.DONE} and len(jobs) == len(METHODS)
        assert session.exec(select(func.count()).select_from(FoldSplit)).one() == 1
    stored = stored_predictions(engine, fold, METHODS, seed=0)
    assert set(stored) == set(METHODS)
    for method in METHODS:
        here = fold_predictions(fold, method, seed=0)
        # Same split, same order, same seed: the same numbers to the last bit.
        assert np.array_equal(stored[method], here), method

    # The report's rows are those predictions on exactly the ratings the run answered.
    data = json.loads(out.read_text())
    assert data["meta"]["baseline predictions"] == "workers (database)"
    (fold_data,) = data["folds"]
    rows = {m["method"] + "/" + m["variant"]: m for m in fold_data["methods"]}
    index = {(r.user_id, r.item_id): k for k, r in enumerate(fold.test)}
    positions = np.array([index[(r.user_id, r.item_id)] for r in answered])
    true = np.array([r.true_rating for r in answered], dtype=float)
    for method in METHODS:
        continuous = rows[f"{method}/continuous"]["overall"]["rmse"]
        rounded = rows[f"{method}/rounded"]["overall"]["rmse"]
        assert continuous == pytest.approx(rmse(true, stored[method][positions]), abs=1e-12)
        assert rounded == pytest.approx(rmse(true, to_scale(stored[method][positions])), abs=1e-12)
        assert rows[f"{method}/continuous"]["overall"]["n"] == len(answered)


def test_a_baseline_job_run_twice_writes_once(database_url: str, tmp_path: Path) -> None:
    dataset = write_csv_dataset(tmp_path)
    queue = f"it-bl-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None, LUSIFER_CACHE_DIR=str(tmp_path / "cache"))
    args = [
        "baselines",
        "--ratings-csv",
        str(tmp_path / "ratings.csv"),
        "--items-csv",
        str(tmp_path / "items.csv"),
        "--folds",
        "f2",
        "--methods",
        "global_mean,svd",
        "--json",
        str(tmp_path / "b.json"),
    ]
    engine = get_engine(database_url)
    job_id = baseline_job_id(fold_digest(dataset.folds["f2"]), "svd", 0)
    with celery_workers(env, tmp_path, count=1, threads=2) as workers:
        result = run_cli(args, env, tmp_path, timeout=240)
        assert result.returncode == 0, result.stderr + workers.log_text()[-3000:]
        with Session(engine) as session:
            first = session.get(BaselinePrediction, job_id)
        assert first is not None
        # As if the lease ran out while the worker fitted: the job is queued and sent again.
        with session_scope(engine) as session:
            session.execute(update(Job).where(col(Job.id) == job_id).values(state=JobState.QUEUED))
        app = make_celery(Settings(broker_url=env["LUSIFER_BROKER_URL"], queue=queue))
        with Session(engine) as session:
            job = session.get(Job, job_id)
        assert job is not None
        send_jobs(app, [job], queue)
        send_jobs(app, [job], queue)  # and delivered twice
        for _ in range(240):
            with Session(engine) as session:
                again = session.get(Job, job_id)
            if again is not None and again.state == JobState.DONE:
                break
            time.sleep(0.25)
        else:
            pytest.fail("the resent job did not finish: " + workers.log_text()[-2000:])
    with Session(engine) as session:
        rows = session.exec(
            select(BaselinePrediction).where(col(BaselinePrediction.job_id) == job_id)
        ).all()
        job = session.get(Job, job_id)
    assert len(rows) == 1 and rows[0].data == first.data and rows[0].created_at == first.created_at
    assert job is not None and job.state == JobState.DONE and job.attempts >= 2
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["meta"]["baseline predictions"] == "workers (database)"
    assert data["folds"][0]["n_scored"] == len(dataset.folds["f2"].test)
