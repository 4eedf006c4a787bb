"""A two-fold run through killed workers, a Redis restart that loses the queue, and a killed
coordinator, finished with `lusifer resume`: nothing lost, nothing counted twice, no call paid
twice. Real Redis (our own, restartable), PostgreSQL, Celery worker processes and the stub."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery
from sqlmodel import Session, select

from coordinator.aggregate import aggregate_fold
from coordinator.dispatch import waiting_job_ids
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.job_ids import RatingInputs
from lusifer.store.tables import Job, JobState, SimulatedRating
from lusifer.stub.audit import RunAudit, audit_run
from tests.integration.services import (
    VENV_BIN,
    Stub,
    celery_workers,
    postgres_schema,
    redis_server,
    run_cli,
    service_env,
    start_worker,
    stop_processes,
    stub_server,
)

pytestmark = pytest.mark.integration

FOLDS = ("u1", "u2")
# Four users with 13 to 29 test ratings in each fold: 8 profile and 40 rating jobs.
USERS = "2,3,8,24"
WORKER_KILLS = 3
# Short lease and grace so that what a kill or a restart orphans comes back within seconds.
FAST_RECOVERY = {"LUSIFER_JOB_LEASE_S": "5", "LUSIFER_REQUEUE_GRACE_S": "3"}


def _run_args(stub: Stub, run_id: str, data_dir: Path) -> list[str]:
    return [
        "run",
        "--base-url",
        stub.base_url,
        "--model",
        "stub-model",
        "--temperature",
        "0",
        "--folds",
        ",".join(FOLDS),
        "--users",
        USERS,
        "--chunk-size",
        "5",
        "--data-dir",
        str(data_dir),
        "--run-id",
        run_id,
    ]


def _states(database_url: str, run_id: str) -> Counter[str]:
    with Session(get_engine(database_url)) as session:
        return Counter(session.exec(select(Job.state).where(Job.run_id == run_id)).all())


def _ratings(database_url: str, run_id: str) -> dict[tuple[str, int, int], int | None]:
    with Session(get_engine(database_url)) as session:
        rows = session.exec(select(SimulatedRating).where(SimulatedRating.run_id == run_id)).all()
    keys = [(r.fold, r.user_id, r.item_id) for r in rows]
    assert len(keys) == len(set(keys)), "a rating is stored twice"
    return {(r.fold, r.user_id, r.item_id): r.rating for r in rows}


def _wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 90, poll_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(poll_s)


def _messages_waiting(broker_url: str, queue: str) -> int:
    """Job messages in the broker's queue that no worker has taken yet."""
    app = Celery(broker=broker_url)
    try:
        return len(waiting_job_ids(app, queue) or ())
    finally:
        app.close()


@dataclass
class Mayhem:
    """What the test did to the run, for the assertions and the report."""

    worker_kills: int = 0
    redis_restarts: int = 0
    coordinator_kills: int = 0
    done_at_each_event: list[int] = field(default_factory=list)


def test_a_run_survives_kills_a_redis_restart_and_a_lost_coordinator(
    data_dir: Path, tmp_path: Path
) -> None:
    run_id = f"crash-{secrets.token_hex(3)}"
    with (
        redis_server(tmp_path) as broker,
        stub_server() as stub,
        postgres_schema("lusifer_ref") as reference_url,
        postgres_schema("lusifer_crash") as crash_url,
    ):
        create_tables(get_engine(reference_url))
        create_tables(get_engine(crash_url))

        # The same configuration, fault-free, in its own schema: the metrics to match.
        started = time.monotonic()
        ref_env = service_env(
            reference_url, f"ref-{secrets.token_hex(3)}", None, LUSIFER_BROKER_URL=broker.url
        )
        with celery_workers(ref_env, tmp_path, count=1, threads=4):
            reference = run_cli(_run_args(stub, run_id, data_dir), ref_env, tmp_path)
        assert reference.returncode == 0, reference.stderr + reference.stdout
        print(f"\nfault-free run took {time.monotonic() - started:.1f} s")
        reference_audit = audit_run(get_engine(reference_url), run_id, stub.requests())

        # The crash run, against a fresh request log, with calls slow enough to be caught.
        stub.reset()
        stub.configure(latency_s=0.6)
        env = service_env(
            crash_url,
            f"crash-{secrets.token_hex(3)}",
            None,
            LUSIFER_BROKER_URL=broker.url,
            **FAST_RECOVERY,
        )
        mayhem = Mayhem()
        started = time.monotonic()
        coordinator_log = tmp_path / "coordinator.log"
        done = lambda: _states(crash_url, run_id)[JobState.DONE]  # noqa: E731
        steady = start_worker(env, tmp_path / "steady.log", threads=2, name="steady")
        victim = start_worker(env, tmp_path / "victim.log", threads=2, name="victim")
        workers = [steady, victim]
        try:
            with coordinator_log.open("wb") as out:
                coordinator = subprocess.Popen(
                    [str(VENV_BIN / "lusifer"), *_run_args(stub, run_id, data_dir)],
                    env={**env, "COLUMNS": "160"},
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            # Restart Redis while it holds job messages that no worker took: with a worker
            # rating a profile's follow-ups itself, only profile jobs travel through the queue,
            # and they drain within seconds, so the moment is chosen, not hoped for.
            # Three or more lost profiles leave at least 12 of the 48 jobs for the kills below.
            _wait_until(
                lambda: _messages_waiting(broker.url, env["LUSIFER_QUEUE"]) >= 3,
                "the broker holds job messages no worker took",
                poll_s=0.02,
            )
            # Down long enough for a worker that gave up reconnecting to have exited.
            broker.restart(down_s=15.0)
            mayhem.redis_restarts += 1
            mayhem.done_at_each_event.append(done())
            # The coordinator rides out the outage and re-sends the jobs whose messages died
            # with the queue; the run makes progress again.
            _wait_until(
                lambda: "queued jobs again" in coordinator_log.read_text(errors="replace"),
                "the coordinator re-sends the jobs the restart lost",
            )
            target = done() + 2
            _wait_until(lambda: done() >= target, "progress after the Redis restart")
            assert coordinator.poll() is None, coordinator_log.read_text(errors="replace")
            assert steady.poll() is None and victim.poll() is None, "a worker died in the outage"

            for kill in range(WORKER_KILLS):
                target = done() + 2
                _wait_until(
                    lambda t=target: done() >= t, f"{target} jobs are done (kill {kill + 1})"
                )
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                mayhem.worker_kills += 1
                mayhem.done_at_each_event.append(done())
                victim = start_worker(env, tmp_path / "victim.log", threads=2, name="victim")
                workers.append(victim)

            coordinator.send_signal(signal.SIGKILL)
            coordinator.wait(10)
            mayhem.coordinator_kills += 1
            mayhem.done_at_each_event.append(done())
            interrupted = _states(crash_url, run_id)
            assert interrupted[JobState.DONE] < sum(interrupted.values())

            resumed = run_cli(["resume", run_id], env, tmp_path, timeout=240)
            assert resumed.returncode == 0, resumed.stderr + resumed.stdout
            print(f"crash run and resume took {time.monotonic() - started:.1f} s")
        finally:
            stop_processes(workers)
        coordinator_text = coordinator_log.read_text(errors="replace")
        log = stub.requests()
        _check_crash_run(
            crash_url, reference_url, run_id, coordinator_text, log, mayhem, reference_audit
        )


def _check_crash_run(
    crash_url: str,
    reference_url: str,
    run_id: str,
    coordinator_text: str,
    log: list[dict[str, object]],
    mayhem: Mayhem,
    reference_audit: RunAudit,
) -> None:
    assert "broker unreachable" in coordinator_text
    assert "Traceback" not in coordinator_text
    assert mayhem.worker_kills >= 3 and mayhem.redis_restarts == 1
    assert _states(crash_url, run_id) == Counter(
        {JobState.DONE: sum(_states(reference_url, run_id).values())}
    )
    # Every expected rating present exactly once, equal to the fault-free run's.
    crashed, clean = _ratings(crash_url, run_id), _ratings(reference_url, run_id)
    assert None not in crashed.values()
    assert crashed == clean
    for fold in FOLDS:
        got = aggregate_fold(get_engine(crash_url), run_id, fold)
        want = aggregate_fold(get_engine(reference_url), run_id, fold)
        assert got.metrics == want.metrics
        assert got.coverage_pct == 100.0

    audit = audit_run(get_engine(crash_url), run_id, log)
    _print_figures(mayhem, audit, reference_audit)
    assert audit.lost_results == 0 and audit.duplicated_results == 0
    assert audit.unmatched_requests == 0  # every request is one of the calls the run recorded
    # No call already recorded was sent again: resume and re-deliveries answered from the cache.
    assert audit.repeated_successful_calls == 0
    assert audit.calls == reference_audit.calls
    # An answer can only be lost to a kill that caught it between arrival and recording.
    assert audit.answered_twice <= mayhem.worker_kills * 2


def _print_figures(mayhem: Mayhem, audit: RunAudit, reference: RunAudit) -> None:
    print(
        f"\ncrash run: {mayhem.worker_kills} worker SIGKILLs, {mayhem.redis_restarts} Redis "
        f"restart (no persistence), {mayhem.coordinator_kills} coordinator SIGKILL, jobs done "
        f"at each event {mayhem.done_at_each_event}; jobs {audit.jobs}, chat requests "
        f"{audit.chat_requests} (fault-free run: {reference.chat_requests}), distinct calls "
        f"{audit.calls} (fault-free: {reference.calls}), re-sent bodies {audit.retries}, "
        f"answered twice {audit.answered_twice}, repeated successful calls "
        f"{audit.repeated_successful_calls}, lost results {audit.lost_results}, duplicated "
        f"results {audit.duplicated_results}"
    )


def _running_rating_job(database_url: str, run_id: str) -> Job | None:
    with Session(get_engine(database_url)) as session:
        return session.exec(
            select(Job).where(
                Job.run_id == run_id, Job.kind == "rating", Job.state == JobState.RUNNING
            )
        ).first()


def _items_rated(database_url: str, job: Job) -> list[bool]:
    items = RatingInputs.model_validate_json(job.inputs_json).items
    rated = _ratings(database_url, job.run_id)
    return [rated[(job.fold, job.user_id, item)] is not None for item in items]


def test_a_worker_stopped_gracefully_mid_call_leaves_no_partial_state(
    data_dir: Path, tmp_path: Path
) -> None:
    run_id = f"sigterm-{secrets.token_hex(3)}"
    queue = f"sigterm-{secrets.token_hex(3)}"
    with postgres_schema("lusifer_sigterm") as url, stub_server("--latency", "1.0") as stub:
        create_tables(get_engine(url))
        env = service_env(url, queue, None)
        busy = start_worker(env, tmp_path / "busy.log", threads=1, name="busy")
        workers = [busy]
        args = _run_args(stub, run_id, data_dir)
        args[args.index("--users") + 1] = "2"
        args[args.index("--folds") + 1] = "u1"
        try:
            with (tmp_path / "coordinator.log").open("wb") as out:
                coordinator = subprocess.Popen(
                    [str(VENV_BIN / "lusifer"), *args],
                    env=env,
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            # The busy worker is inside an LLM call of a rating job: asked, not yet answered.
            _wait_until(
                lambda: (
                    _running_rating_job(url, run_id) is not None
                    and stub.requests()[-1]["delivered"] is None
                ),
                "a rating job is mid-call",
            )
            held = _running_rating_job(url, run_id)
            assert held is not None
            busy.send_signal(signal.SIGTERM)
            workers.append(start_worker(env, tmp_path / "other.log", threads=2, name="other"))
            busy.wait(60)
            # The job it held is finished whole, or back in line untouched: never half-done.
            with Session(get_engine(url)) as session:
                after = session.get(Job, held.id)
            assert after is not None and after.state != JobState.RUNNING
            rated = _items_rated(url, held)
            if after.state == JobState.DONE:
                assert all(rated)
            else:
                assert after.state in (JobState.QUEUED, JobState.PENDING) and not any(rated)
            coordinator.wait(120)
            assert coordinator.returncode == 0
        finally:
            stop_processes(workers)
            if coordinator.poll() is None:
                coordinator.kill()
        assert busy.returncode == 0  # a warm shutdown, not a crash
        assert "Traceback" not in (tmp_path / "busy.log").read_text(errors="replace")
        assert set(_states(url, run_id)) == {JobState.DONE}
        assert None not in _ratings(url, run_id).values()
        audit = audit_run(get_engine(url), run_id, stub.requests())
        assert audit.repeated_successful_calls == 0 and audit.unmatched_requests == 0
