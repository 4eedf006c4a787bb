"""Interrupted runs, duplicate deliveries and a faulty LLM, with real services."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlmodel import Session, func, select

from lusifer.core.errors import ExitCode
from lusifer.core.settings import Settings
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job, JobState, SimulatedRating
from tests.integration.services import (
    VENV_BIN,
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema("lusifer_resume") as url:
        create_tables(get_engine(url))
        yield url


def _states(database_url: str, run_id: str) -> Counter[str]:
    with Session(get_engine(database_url)) as session:
        rows = session.exec(select(Job.state).where(Job.run_id == run_id)).all()
    return Counter(rows)


def _successful_chat_bodies(requests: list[dict[str, object]]) -> Counter[object]:
    return Counter(
        r["body_sha256"]
        for r in requests
        if str(r["path"]).endswith("/chat/completions") and r["status"] == 200
    )


def test_killed_coordinator_and_stopped_workers_resume_without_repeating_calls(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"resume-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None)
    run_id = f"resume-{secrets.token_hex(3)}"
    args = [
        "run",
        "--base-url",
        "",
        "--model",
        "stub-model",
        "--folds",
        "u1,u2",
        "--users",
        "2,3,4,300,301,302",
        "--data-dir",
        str(data_dir),
        "--run-id",
        run_id,
    ]
    with stub_server("--latency", "0.2") as stub:
        args[2] = stub.base_url
        with celery_workers(env, tmp_path, count=1, threads=2):
            coordinator = subprocess.Popen(
                [str(VENV_BIN / "lusifer"), *args],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 180
            while _states(database_url, run_id)[JobState.DONE] < 4:
                assert time.monotonic() < deadline, "the run made no progress"
                time.sleep(0.2)
            coordinator.send_signal(signal.SIGKILL)
            coordinator.wait(10)
        # Workers stopped with a warm shutdown: what they held is finished, the rest waits.
        interrupted = _states(database_url, run_id)
        assert interrupted[JobState.DONE] < sum(interrupted.values())
        assert interrupted[JobState.RUNNING] == 0

        with celery_workers(env, tmp_path, count=2, threads=4):
            resumed = run_cli(["resume", run_id], env, tmp_path, timeout=180)
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert "resuming run" in resumed.stdout

        states = _states(database_url, run_id)
        assert set(states) == {JobState.DONE}
        with Session(get_engine(database_url)) as session:
            missing = session.exec(
                select(func.count()).where(
                    SimulatedRating.run_id == run_id,
                    SimulatedRating.rating == None,  # noqa: E711
                )
            ).one()
        assert missing == 0
        # No call that had succeeded was sent again.
        repeats = {k: n for k, n in _successful_chat_bodies(stub.requests()).items() if n > 1}
        assert repeats == {}


def _unacked(broker: redis.Redis, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not yet acknowledged.

    Only this queue's: the broker's database is shared with every other test and benchmark on
    the machine, and a worker killed elsewhere leaves its messages in kombu's one hash.
    """
    # kombu keeps each as JSON [message, exchange, routing key]; the routing key is the queue.
    entries = broker.hvals("unacked")
    return sum(1 for raw in entries if json.loads(raw)[2] == queue)


def test_duplicate_deliveries_are_skipped(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"dup-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None)
    run_id = f"dup-{secrets.token_hex(3)}"
    with stub_server() as stub, celery_workers(env, tmp_path, count=1, threads=4):
        result = run_cli(
            [
                "run",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--folds",
                "u1",
                "--users",
                "5",
                "--data-dir",
                str(data_dir),
                "--run-id",
                run_id,
            ],
            env,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        before = stub.chat_count()
        # The broker delivers every job of the finished run again, twice.
        app = make_celery(Settings(broker_url=env["LUSIFER_BROKER_URL"], queue=queue))
        with Session(get_engine(database_url)) as session:
            jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
        for _ in range(2):
            for job in jobs:
                name = "lusifer.profile" if job.kind == "profile" else "lusifer.rate"
                app.send_task(name, args=[job.id], queue=queue)
        # Wait until the workers have taken every duplicate off the queue and settled them.
        broker = redis.Redis.from_url(env["LUSIFER_BROKER_URL"])
        deadline = time.monotonic() + 30
        while broker.llen(queue) > 0 or _unacked(broker, queue) > 0:
            assert time.monotonic() < deadline, "the duplicates were never consumed"
            time.sleep(0.2)
        assert stub.chat_count() == before
    assert _states(database_url, run_id) == Counter({JobState.DONE: len(jobs)})


def test_a_run_against_a_faulty_llm_completes_with_full_coverage(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"faults-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None, LUSIFER_LLM_ATTEMPTS="6")
    run_id = f"faults-{secrets.token_hex(3)}"
    faults = "429,500,503,reset,truncated,prose,wrong_keys,out_of_range,missing_keys"
    with (
        stub_server("--fault-rate", "0.25", "--faults", faults, "--fault-seed", "7") as stub,
        celery_workers(env, tmp_path, count=2, threads=4),
    ):
        result = run_cli(
            [
                "run",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--folds",
                "u1",
                "--users",
                "6,7,8",
                "--chunk-size",
                "10",
                "--max-reask",
                "4",
                "--data-dir",
                str(data_dir),
                "--run-id",
                run_id,
            ],
            env,
            tmp_path,
            timeout=240,
        )
        injected = Counter(r["fault"] for r in stub.requests() if r["fault"])
    assert result.returncode == 0, result.stderr + result.stdout
    assert sum(injected.values()) >= 5, injected
    with Session(get_engine(database_url)) as session:
        rows = session.exec(
            select(SimulatedRating.rating).where(SimulatedRating.run_id == run_id)
        ).all()
    assert rows and all(r in {1, 2, 3, 4, 5} for r in rows)
    assert "100.0" in result.stdout  # coverage


def test_jobs_that_keep_failing_end_as_failed_and_the_run_ends(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"exhaust-{secrets.token_hex(4)}"
    # One in-call attempt and two job retries: each job gives up after three 500s.
    env = service_env(
        database_url, queue, None, LUSIFER_LLM_ATTEMPTS="1", LUSIFER_JOB_MAX_RETRIES="2"
    )
    run_id = f"exhaust-{secrets.token_hex(3)}"
    with (
        stub_server("--fault-rate", "1.0", "--faults", "500") as stub,
        celery_workers(env, tmp_path, count=1, threads=2),
    ):
        result = run_cli(
            [
                "run",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--folds",
                "u1",
                "--users",
                "17",
                "--data-dir",
                str(data_dir),
                "--run-id",
                run_id,
            ],
            env,
            tmp_path,
            timeout=120,
        )
        attempts = stub.chat_count()
    # The run ends, with its table, and says that it failed: never exit 0 with every job failed.
    assert result.returncode == ExitCode.JOBS_FAILED, result.stderr + result.stdout
    states = _states(database_url, run_id)
    assert set(states) == {JobState.FAILED}
    assert attempts == 3  # the profile job: first try and two retries; ratings never ran
    with Session(get_engine(database_url)) as session:
        errors = session.exec(select(Job.error).where(Job.run_id == run_id)).all()
    assert any("gave up after retries" in (e or "") for e in errors)
