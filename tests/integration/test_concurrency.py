"""One worker process holds many LLM calls in flight: its threads wait on the LLM, not on
each other, the database or the HTTP connection pool."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from lusifer.store.engines import get_engine
from lusifer.store.tables import Job, JobKind, JobState, SimulatedRating
from tests.integration.services import (
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_run_args,
    stub_server,
)

pytestmark = pytest.mark.integration

USERS = 90  # more profile jobs than one worker's default 80 threads, so all stay busy


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_one_default_worker_keeps_64_calls_in_flight(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"it-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None)
    run_id = f"conc-{secrets.token_hex(3)}"
    # One `lusifer worker` with its defaults (LUSIFER_WORKER_CONCURRENCY unset). 2 s rather
    # than 1 s of latency: on a loaded 2-core machine the worker may need more than a second
    # to start its 80 first calls (measured: 69-80 in flight at 1-1.5 s), and the first
    # answers must not come back before the last call has started.
    with stub_server("--latency", "2.0") as stub, celery_workers(env, tmp_path, 1, None) as w:
        options = ["--folds", "u1", "--max-users", str(USERS), "--chunk-size", "100"]
        # Two profile steps per user keep the test short.
        options += ["--profile-history", "20"]
        result = run_cli(
            stub_run_args(stub.base_url, data_dir, run_id, *options),
            env,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr + result.stdout + w.log_text()[-3000:]
        stats = stub.stats()
    print(f"stub stats: {stats}")  # the measured figure, shown with -s
    assert stats["max_in_flight"] >= 64, stats
    assert stats["in_flight"] == 0
    engine = get_engine(database_url)
    with Session(engine) as session:
        jobs = session.exec(select(Job.kind, Job.state).where(Job.run_id == run_id)).all()
        unrated = session.exec(
            select(func.count()).where(
                SimulatedRating.run_id == run_id,
                SimulatedRating.rating == None,  # noqa: E711
            )
        ).one()
    assert sum(1 for kind, _ in jobs if kind == JobKind.PROFILE) == USERS
    assert {state for _, state in jobs} == {JobState.DONE}
    assert unrated == 0
