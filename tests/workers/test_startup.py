"""A Celery worker starts without the heavy libraries its first jobs may not need."""

from __future__ import annotations

from pathlib import Path

from tests.startup_imports import HEAVY, start


def test_the_worker_app_loads_no_heavy_library(tmp_path: Path) -> None:
    # What `celery -A workers.app worker` (and `lusifer worker`) imports before any job.
    started = start("import workers.app\n", tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.loaded((*HEAVY, "alembic", "httpx")) == []
    assert "celery" in started.packages and "sqlmodel" in started.packages
