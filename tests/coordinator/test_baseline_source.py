"""Without a broker: predictions stored in the database are read, the rest fitted here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session

from coordinator import baseline_source
from coordinator.baseline_cache import cached_predictions
from coordinator.baseline_source import baseline_predictions
from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings
from lusifer.evaluate.baseline_jobs import execute_baseline_job, plan_baseline_jobs
from lusifer.evaluate.baselines import fold_predictions
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job
from tests.lusifer.evaluate.test_baseline_jobs import small_fold


def test_stored_predictions_are_read_and_only_the_rest_fitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_tables(engine)
    fold = small_fold()
    (job_id,) = plan_baseline_jobs(engine, fold, "fp", ["svd"], seed=0)
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    execute_baseline_job(engine, job)
    fitted: list[str] = []
    real = cached_predictions

    def spy(fold: Any, methods: Sequence[str], **kwargs: Any) -> Any:
        fitted.extend(methods)
        return real(fold, methods, **kwargs)

    monkeypatch.setattr(baseline_source, "cached_predictions", spy)
    settings = Settings(cache_dir=tmp_path / "cache")
    result = baseline_predictions(
        [fold], "fp", ["svd", "global_mean"], seed=0, settings=settings, engine=engine
    )
    assert fitted == ["global_mean"]
    assert result.source == "database + this process"
    assert np.array_equal(result.by_fold["f1"]["svd"], fold_predictions(fold, "svd", seed=0))
    assert list(result.by_fold["f1"]) == ["svd", "global_mean"]

    fitted.clear()
    only_stored = baseline_predictions(
        [fold], "fp", ["svd"], seed=0, settings=settings, engine=engine
    )
    assert fitted == [] and only_stored.source == "database"
    no_database = baseline_predictions([fold], "fp", ["svd"], seed=0, settings=settings)
    assert fitted == ["svd"] and no_database.source == "this process"


def test_a_broker_without_a_database_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="LUSIFER_DATABASE_URL"):
        baseline_predictions([small_fold()], "fp", ["svd"], seed=0, settings=settings)
