"""The baseline task: fits and stores once, skips a finished job, records a failing fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, func, select

from lusifer.core.settings import get_settings
from lusifer.evaluate.baseline_jobs import plan_baseline_jobs, stored_predictions
from lusifer.evaluate.baselines import fold_predictions
from lusifer.store.engines import create_tables, get_engine, session_scope
from lusifer.store.tables import BaselinePrediction, Job, JobState
from tests.lusifer.evaluate.test_baseline_jobs import small_fold, stored_job
from workers.tasks import run_baseline_job


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    monkeypatch.setenv("LUSIFER_DATABASE_URL", url)
    get_settings.cache_clear()
    engine = get_engine(url)
    create_tables(engine)
    return engine


def test_the_task_fits_stores_and_skips_a_finished_job(engine: Engine) -> None:
    fold = small_fold()
    (job_id,) = plan_baseline_jobs(engine, fold, "fp", ["svd"], seed=0)
    assert run_baseline_job(job_id) == JobState.DONE
    assert run_baseline_job(job_id).startswith("skipped")  # a duplicate delivery
    job = stored_job(engine, job_id)
    assert (job.state, job.attempts, job.error) == (JobState.DONE, 1, None)
    stored = stored_predictions(engine, fold, ["svd"], seed=0)["svd"]
    assert stored.tolist() == fold_predictions(fold, "svd", seed=0).tolist()
    # Run again after all (a lease ran out while it was fitting): still one row.
    with session_scope(engine) as session:
        session.execute(update(Job).where(col(Job.id) == job_id).values(state=JobState.QUEUED))
    assert run_baseline_job(job_id) == JobState.DONE
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(BaselinePrediction)).one() == 1
    assert stored_job(engine, job_id).attempts == 2


def test_a_failing_fit_fails_the_job_with_its_reason(engine: Engine) -> None:
    fold = small_fold()
    (job_id,) = plan_baseline_jobs(engine, fold, "fp", ["global_mean"], seed=0)
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.inputs_json = job.inputs_json.replace("global_mean", "slope_one")
    assert run_baseline_job(job_id) == JobState.FAILED
    job = stored_job(engine, job_id)
    assert job.state == JobState.FAILED
    assert job.error is not None and "unknown baseline 'slope_one'" in job.error
