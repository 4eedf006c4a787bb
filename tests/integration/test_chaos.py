"""Liveness under everything at once: a two-fold run whose database connections are killed
repeatedly and then refused for 12 s, whose worker is SIGKILLed, and whose LLM answers with
NUL bytes, absurd usage blocks and a 429 asking to wait three years, *ends*, within a bound
of the fault-free time, with every rating stored once, equal to the fault-free run's, exit 0,
and no call paid twice. Real PostgreSQL, Redis, Celery worker processes and the stub.

The PostgreSQL is a server of the test's own (the embedded one), as its Redis is: killing and
refusing every connection of the machine's shared server would break whatever else uses it
(another session's benchmark lost its connections to this test once)."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from lusifer.core.errors import ExitCode
from lusifer.embedded.postgres import embedded_postgres
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Job, JobState
from lusifer.stub.audit import audit_run
from tests.integration.services import (
    VENV_BIN,
    celery_workers,
    redis_server,
    run_cli,
    service_env,
    start_worker,
    stop_processes,
    stub_server,
)
from tests.integration.test_crash import (
    FAST_RECOVERY,
    _ratings,
    _run_args,
    _states,
    _wait_until,
)

pytestmark = pytest.mark.integration
HOSTILE = ["nul_byte", "huge_usage", "retry_after_huge"]
# A shared limiter, so that the three-year Retry-After also pauses it (for the capped 2 s).
LIMITED = ["--rpm", "6000"]
# A lease longer than the 12 s outage: a job whose holder rides the outage out is not handed
# to a second worker meanwhile (which would pay for its call again).
CHAOS_ENV = {
    **FAST_RECOVERY,
    "LUSIFER_JOB_LEASE_S": "30",
    "LUSIFER_MAX_WAIT_S": "2",
    "LUSIFER_DB_OUTAGE_S": "90",
}


@dataclass(frozen=True)
class PrivatePostgres:
    """A PostgreSQL server of this test's own, with a schema per run."""

    url: str  # its database's SQLAlchemy URL

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        # Another database of the same server: `ALLOW_CONNECTIONS false` refuses everyone.
        found = make_url(self.url)
        return psycopg.connect(
            host=str(found.query["host"]), dbname="postgres", user="postgres", autocommit=True
        )

    def schema(self, name: str) -> str:
        """A fresh schema; the URL that uses it."""
        found = make_url(self.url)
        with psycopg.connect(
            host=str(found.query["host"]), dbname=found.database, user="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url}&options=-csearch_path%3D{name}"

    def terminate_connections(self) -> int:
        """Drop every connection to the run's database; how many there were."""
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (make_url(self.url).database,),
            ).fetchall()
        return len(rows)

    def allow_connections(self, allowed: bool) -> None:
        """Let the run's database take connections again, or refuse every new one."""
        with self._admin() as conn:
            conn.execute(
                f'ALTER DATABASE "{make_url(self.url).database}" '
                f"ALLOW_CONNECTIONS {str(allowed).lower()}"
            )


def _done(url: str, run_id: str) -> int:
    """Jobs done, on a connection of its own (the pool's are terminated under us); -1 while
    the database refuses connections."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with Session(engine) as session:
            return len(
                session.exec(
                    select(Job.id).where(Job.run_id == run_id, Job.state == JobState.DONE)
                ).all()
            )
    except OperationalError:
        return -1
    finally:
        engine.dispose()


def test_a_run_ends_through_database_outages_kills_and_hostile_answers(
    data_dir: Path, tmp_path: Path
) -> None:
    run_id = f"chaos-{secrets.token_hex(3)}"
    # A Redis of its own: the SIGKILLed worker leaves unacknowledged messages behind, which
    # must not wait in the shared broker of the other tests.
    with (
        redis_server(tmp_path) as broker,
        stub_server() as stub,
        embedded_postgres(tmp_path / "pg") as server_url,
    ):
        server = PrivatePostgres(server_url)
        reference_url, chaos_url = server.schema("chaosref"), server.schema("chaos")
        create_tables(get_engine(reference_url))
        create_tables(get_engine(chaos_url))
        started = time.monotonic()
        ref_env = service_env(
            reference_url, f"chaosref-{secrets.token_hex(3)}", None, LUSIFER_BROKER_URL=broker.url
        )
        with celery_workers(ref_env, tmp_path, count=1, threads=4):
            reference = run_cli(_run_args(stub, run_id, data_dir), ref_env, tmp_path)
        assert reference.returncode == 0, reference.stderr + reference.stdout
        fault_free_s = time.monotonic() - started

        stub.reset()
        stub.configure(latency_s=0.3, fault_every_n=4, faults=HOSTILE)
        env = service_env(
            chaos_url,
            f"chaos-{secrets.token_hex(3)}",
            None,
            LUSIFER_BROKER_URL=broker.url,
            **CHAOS_ENV,
        )
        done = lambda: _done(chaos_url, run_id)  # noqa: E731
        log_path = tmp_path / "chaos-coordinator.log"
        workers = [start_worker(env, tmp_path / f"chaos-{i}.log", threads=2) for i in range(2)]
        started = time.monotonic()
        terminated = 0
        try:
            with log_path.open("wb") as out:
                coordinator = subprocess.Popen(
                    [
                        str(VENV_BIN / "lusifer"),
                        *_run_args(stub, run_id, data_dir),
                        "--rpm",
                        "6000",
                    ],
                    env={**env, "COLUMNS": "160"},
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            _wait_until(lambda: done() >= 2, "the first jobs are done")
            for _ in range(3):  # connections dropped under everyone's feet, three times
                terminated += server.terminate_connections()
                time.sleep(1.0)
            target = done() + 2
            _wait_until(lambda: done() >= target, "progress after the terminated connections")
            server.allow_connections(False)
            try:
                terminated += server.terminate_connections()
                time.sleep(12.0)  # the database refuses every connection meanwhile
            finally:
                server.allow_connections(True)
            target = done() + 2
            _wait_until(lambda: done() >= target, "progress after the refused connections")
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            workers.append(start_worker(env, tmp_path / "chaos-new.log", threads=2))
            bound_s = 3 * fault_free_s + 150
            coordinator.wait(timeout=bound_s)
            chaos_s = time.monotonic() - started
        finally:
            server.allow_connections(True)
            stop_processes(workers)
        text = log_path.read_text(errors="replace")
        print(
            f"\nfault-free run {fault_free_s:.1f} s; chaos run {chaos_s:.1f} s (bound "
            f"{bound_s:.0f} s), {terminated} connections terminated"
        )
        assert coordinator.returncode == ExitCode.OK, text
        assert "database unreachable" in text and "database reachable again" in text, text
        assert "Traceback" not in text
        for url in (chaos_url, reference_url):
            get_engine(url).dispose()  # their pools hold connections terminated above
        states = _states(chaos_url, run_id)
        assert set(states) == {JobState.DONE}, states
        chaos, clean = _ratings(chaos_url, run_id), _ratings(reference_url, run_id)
        assert chaos == clean and None not in chaos.values()
        audit = audit_run(get_engine(chaos_url), run_id, stub.requests())
        assert audit.lost_results == 0 and audit.duplicated_results == 0
        assert audit.repeated_successful_calls == 0
