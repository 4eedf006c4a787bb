"""`lusifer run --batch-api` against the stub's Files and Batches endpoints over HTTP, with
real PostgreSQL: rounds, re-asks through further batches, and a coordinator killed while a
batch is in flight."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlmodel import Session, col, func, select

from coordinator.status import print_status
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job, JobState, LLMBatch, LLMCall, ProfileStep, SimulatedRating
from tests.integration.services import (
    VENV_BIN,
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration

USERS = "1,2,3,5"


@pytest.fixture
def batch_db() -> Iterator[str]:
    with postgres_schema("lusifer_batch") as url:
        create_tables(get_engine(url))
        yield url


@pytest.fixture
def online_db() -> Iterator[str]:
    with postgres_schema("lusifer_online") as url:
        yield url


def run_args(base_url: str, data_dir: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "run",
        "--base-url",
        base_url,
        "--model",
        "stub-model",
        "--folds",
        "u1",
        "--users",
        USERS,
        "--profile-history",
        "20",
        "--profile-batch",
        "10",
        "--chunk-size",
        "10",
        "--price-prompt",
        "1.0",
        "--price-completion",
        "2.0",
        "--data-dir",
        str(data_dir),
        "--run-id",
        run_id,
        *extra,
    ]


def outcome(database_url: str, run_id: str) -> dict[str, Any]:
    """Everything a run computed, in a comparable form."""
    with Session(get_engine(database_url)) as session:
        ratings = session.exec(
            select(SimulatedRating.user_id, SimulatedRating.item_id, SimulatedRating.rating).where(
                SimulatedRating.run_id == run_id
            )
        ).all()
        profiles = session.exec(
            select(ProfileStep.user_id, ProfileStep.step, ProfileStep.profile).where(
                ProfileStep.run_id == run_id
            )
        ).all()
        states = Counter(session.exec(select(Job.state).where(Job.run_id == run_id)).all())
        cost = session.exec(select(func.sum(LLMCall.cost_usd))).one()
    return {
        "ratings": sorted(ratings),
        "profiles": sorted(profiles),
        "states": states,
        "cost": float(cost or 0.0),
    }


def batches(database_url: str, run_id: str) -> list[LLMBatch]:
    with Session(get_engine(database_url)) as session:
        return list(
            session.exec(
                select(LLMBatch).where(LLMBatch.run_id == run_id).order_by(col(LLMBatch.round))
            ).all()
        )


def submissions(requests: list[dict[str, Any]]) -> int:
    return sum(1 for r in requests if r["method"] == "POST" and r["path"] == "/v1/batches")


def batch_lines(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["method"] == "BATCH"]


def test_a_batch_run_killed_in_flight_resumes_and_matches_an_online_run(
    batch_db: str, online_db: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"batch-{secrets.token_hex(4)}"
    run_id = f"batch-{secrets.token_hex(3)}"
    env = service_env(batch_db, queue, None)
    with stub_server("--batch-delay", "2") as stub:
        args = run_args(stub.base_url, data_dir, run_id, "--batch-api", "--batch-poll-s", "0.2")
        coordinator = subprocess.Popen(
            [str(VENV_BIN / "lusifer"), *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        # Kill it once the second round is submitted: one batch collected, one in flight.
        while len(batches(batch_db, run_id)) < 2:
            assert coordinator.poll() is None, "the coordinator ended before round 2"
            assert time.monotonic() < deadline, "round 2 was never submitted"
            time.sleep(0.05)
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(10)
        in_flight = [b for b in batches(batch_db, run_id) if not b.collected]
        assert [b.round for b in in_flight] == [1]
        status = Console(record=True, width=200)
        print_status(get_engine(batch_db), run_id, status)
        assert f"round 2 batch {in_flight[0].id}" in status.export_text()

        resumed = run_cli(["resume", run_id, "--batch-poll-s", "0.2"], env, tmp_path, timeout=180)
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert "1 batches in flight re-attached" in resumed.stdout
        requests = stub.requests()

        online_id = f"online-{secrets.token_hex(3)}"
        online_env = service_env(online_db, queue, None)
        with celery_workers(online_env, tmp_path, count=1, threads=4):
            online = run_cli(run_args(stub.base_url, data_dir, online_id), online_env, tmp_path)
        assert online.returncode == 0, online.stderr + online.stdout

    # Two profile steps, then the ratings: three sequential rounds, one batch each, and the
    # batch in flight at the kill was polled again, never submitted again.
    stored = batches(batch_db, run_id)
    assert [b.round for b in stored] == [0, 1, 2]
    assert all(b.collected and b.status == "completed" for b in stored)
    assert submissions(requests) == 3
    lines = Counter(r["custom_id"] for r in batch_lines(requests))
    assert lines and max(lines.values()) == 1
    assert sum(b.line_count for b in stored) == len(lines)

    got, expected = outcome(batch_db, run_id), outcome(online_db, online_id)
    assert set(got["states"]) == {JobState.DONE}
    assert len(got["ratings"]) > 20 and len(got["profiles"]) == 2 * len(USERS.split(","))
    assert all(rating is not None for _, _, rating in got["ratings"])
    assert got["ratings"] == expected["ratings"]
    assert got["profiles"] == expected["profiles"]
    # Same tokens, at half the price.
    assert got["cost"] == pytest.approx(expected["cost"] / 2, rel=1e-9)
    assert expected["cost"] > 0


def test_garbage_and_error_lines_go_into_further_batches(
    batch_db: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"batchf-{secrets.token_hex(4)}"
    run_id = f"batchf-{secrets.token_hex(3)}"
    env = service_env(batch_db, queue, None)
    faults = ("--fault-every-n", "5", "--faults", "500,wrong_keys,missing_keys,out_of_range")
    with stub_server(*faults) as stub:
        args = run_args(
            stub.base_url,
            data_dir,
            run_id,
            "--batch-api",
            "--batch-poll-s",
            "0.1",
            "--max-reask",
            "4",
        )
        result = run_cli(args, env, tmp_path, timeout=180)
        requests = stub.requests()
    assert result.returncode == 0, result.stderr + result.stdout

    lines = batch_lines(requests)
    injected = Counter(r["fault"] for r in lines if r["fault"])
    assert injected["500"] >= 1 and sum(injected.values()) >= 3, injected
    # A line that failed with 500 went into a later batch and was answered there.
    failed = {r["custom_id"] for r in lines if r["status"] == 500}
    answered_later = {r["custom_id"] for r in lines if r["status"] == 200} & failed
    assert answered_later == failed
    # Garbage answers were re-asked: more rounds than the three of a clean run.
    stored = batches(batch_db, run_id)
    assert submissions(requests) == len(stored) > 3
    with Session(get_engine(batch_db)) as session:
        reasks = session.exec(select(func.sum(Job.reasks)).where(Job.run_id == run_id)).one()
    assert (reasks or 0) >= 1
    got = outcome(batch_db, run_id)
    assert set(got["states"]) == {JobState.DONE}, got["states"]
    assert len(got["ratings"]) > 20
    assert all(rating is not None for _, _, rating in got["ratings"])
