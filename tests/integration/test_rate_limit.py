"""Two worker processes share one requests-per-window limit through Redis: the stub never sees
more than R requests in any window (a 3 s window here, so the test takes seconds)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from lusifer.store.engines import get_engine
from lusifer.store.tables import Job, JobState
from tests.integration.services import (
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_run_args,
    stub_server,
)
from tests.lusifer.llm.test_ratelimit import most_in_any_window

pytestmark = pytest.mark.integration

LIMIT = 8
WINDOW_S = 3.0
# The limiter counts grants; the stub logs arrivals, later by the time the client takes to
# send: milliseconds, but up to ~0.4 s on this 2-core machine under a load of 15-20. Windows
# this much shorter than the limiter's absorb that jitter.
ARRIVAL_JITTER_S = 0.5


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_two_workers_never_exceed_the_shared_requests_per_window(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"it-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None)
    run_id = f"rl-{secrets.token_hex(3)}"
    with stub_server("--latency", "0.05") as stub, celery_workers(env, tmp_path, 2, 8) as w:
        options = ["--folds", "u1", "--max-users", "3", "--chunk-size", "100"]
        options += ["--rpm", str(LIMIT), "--rate-window", str(WINDOW_S)]
        result = run_cli(
            stub_run_args(stub.base_url, data_dir, run_id, *options),
            env,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr + result.stdout + w.log_text()[-3000:]
        arrivals = [
            round(r["ts"] * 1000) for r in stub.requests() if r["path"].endswith("/completions")
        ]
    # 3 users: 4 profile steps and 1 rating call each.
    assert len(arrivals) == 15
    window_ms = round((WINDOW_S - ARRIVAL_JITTER_S) * 1000)
    assert most_in_any_window(arrivals, window_ms) <= LIMIT
    # 15 calls at 8 per window take more than one window: the limiter did hold them back.
    assert max(arrivals) - min(arrivals) >= window_ms
    with Session(get_engine(database_url)) as session:
        states = session.exec(select(Job.state).where(Job.run_id == run_id)).all()
    assert set(states) == {JobState.DONE}
