"""A cluster for one measurement: a PostgreSQL schema, a Redis queue, the stub LLM server and
Celery worker processes — started as the integration tests start them — and a coordinator
that plans, stores and follows a run in this process so each phase can be timed."""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bench.cpu import CpuMeter, postgres_backends, redis_server_pid
from coordinator.datasets import load_dataset, resolve_dataset_config
from coordinator.follow import follow
from coordinator.plan import Plan, plan_run, store_plan
from lusifer.core.config import RunConfig, parse_run_config
from lusifer.core.errors import ServiceError
from lusifer.core.settings import Settings
from lusifer.embedded.postgres import DATABASE as EMBEDDED_DATABASE
from lusifer.embedded.postgres import embedded_postgres
from lusifer.embedded.redis import embedded_redis
from lusifer.method.prompts import load_prompt_set
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.run_states import set_run_status
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, SimulatedRating
from tests.integration.services import (
    PG_ADMIN,
    REDIS_DB,
    Stub,
    Workers,
    celery_workers,
    postgres_schema,
    service_env,
    stub_server,
)

STUB_MODEL = "stub-model"


@dataclass
class Cluster:
    """The services of one measurement and the environment their processes share."""

    env: dict[str, str]
    engine: Engine
    stub: Stub
    workers: Workers
    settings: Settings
    application_name: str
    admin_url: str | None = PG_ADMIN  # None: no PostgreSQL (a SQLite file)
    redis_pid: int | None = None  # an embedded Redis of the figure's own

    def cpu_meter(self) -> CpuMeter:
        """A meter of the CPU this cluster's processes use (a shared Redis counted apart)."""
        redis_pid = self.redis_pid or redis_server_pid()
        redis_name = "Redis" if self.redis_pid else "Redis (shared)"
        return CpuMeter(
            {
                "workers": lambda: [p.pid for p in self.workers.processes],
                "stub server": lambda: [self.stub.process.pid],
                "coordinator": lambda: [os.getpid()],
                "PostgreSQL": lambda: (
                    postgres_backends(self.admin_url, self.application_name)
                    if self.admin_url
                    else []
                ),
                redis_name: lambda: [redis_pid] if redis_pid else [],
            }
        )


Engines = Literal["cluster", "embedded", "sqlite"]


@contextmanager
def _cluster_services(
    engines: Engines, application_name: str
) -> Iterator[tuple[str, str, str | None, int | None]]:
    """(database URL, broker URL, admin DSN, Redis pid) of a figure: the machine's services;
    local mode's embedded PostgreSQL and Redis in a work directory of their own; or the
    embedded Redis with a SQLite file, the local mode of earlier versions."""
    with ExitStack() as stack:
        if engines == "cluster":
            schema_url = stack.enter_context(postgres_schema("lusifer_bench"))
            # Named connections let the CPU meter find this run's PostgreSQL backends.
            database_url = f"{schema_url}&application_name={application_name}"
            yield database_url, f"redis://127.0.0.1:6379/{REDIS_DB}", PG_ADMIN, None
            return
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lusifer-bench-")))
        broker_url = stack.enter_context(embedded_redis(work_dir))
        redis_pid = _pid_of_socket_server(broker_url.removeprefix("redis+socket://"))
        if engines == "sqlite":
            yield f"sqlite:///{work_dir / 'lusifer.db'}", broker_url, None, redis_pid
            return
        url = stack.enter_context(embedded_postgres(work_dir))
        admin = url.replace("postgresql+psycopg", "postgresql").replace(
            f"/{EMBEDDED_DATABASE}?", "/postgres?"
        )
        yield f"{url}&application_name={application_name}", broker_url, admin, redis_pid


def _pid_of_socket_server(socket: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if socket in (entry / "cmdline").read_text().replace("\0", " "):
                    return int(entry.name)
            except OSError:
                continue
    return None


@contextmanager
def cluster(
    *,
    workers: int,
    threads: int,
    latency_s: float = 0.0,
    worker_env: dict[str, str] | None = None,
    engines: Engines = "cluster",
) -> Iterator[Cluster]:
    """Start a fresh schema, the stub at ``latency_s`` and ``workers`` x ``threads`` workers.

    ``engines``: the machine's services, or local mode's (see ``_cluster_services``), so
    they can be compared on the same plan.
    """
    queue = f"bench-{secrets.token_hex(4)}"
    with ExitStack() as stack:
        application_name = f"lusifer-bench-{secrets.token_hex(3)}"
        database_url, broker_url, admin_url, redis_pid = stack.enter_context(
            _cluster_services(engines, application_name)
        )
        engine = get_engine(database_url)
        create_tables(engine)
        stub = stack.enter_context(stub_server("--latency", str(latency_s)))
        env = service_env(
            database_url,
            queue,
            None,
            LUSIFER_BROKER_URL=broker_url,
            LUSIFER_LOG_LEVEL="WARNING",
            LUSIFER_TASK_EVENTS="0",  # nobody watches; events cost worker CPU
            **(worker_env or {}),
        )
        # Kept after the figure (a few lines at WARNING): a failed figure points at them.
        log_dir = Path(tempfile.mkdtemp(prefix="lusifer-bench-logs-"))
        pool = stack.enter_context(
            celery_workers(env, log_dir, count=workers, threads=threads, loglevel="WARNING")
        )
        # The coordinator's part runs here: no task-sent events either (nobody watches, and
        # they were 40 % of sending a job).
        settings = Settings(
            broker_url=env["LUSIFER_BROKER_URL"],
            database_url=database_url,
            queue=queue,
            task_events=False,
        )
        wait_for_workers(settings, workers)
        yield Cluster(env, engine, stub, pool, settings, application_name, admin_url, redis_pid)
        engine.dispose()


def wait_for_workers(settings: Settings, count: int, timeout_s: float = 120.0) -> None:
    """Block until ``count`` workers answer a ping: their start-up is not part of a figure."""
    app = make_celery(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0) or []) >= count:
            return
    raise ServiceError(f"{count} Celery workers did not start within {timeout_s:.0f} s")


def stub_run_config(
    data_dir: Path, folds: tuple[str, ...], max_users: int | None, base_url: str, **extra: object
) -> RunConfig:
    """A run of MovieLens 100K against the stub server."""
    return parse_run_config(
        {
            "dataset": resolve_dataset_config(data_dir, None, Settings()),
            "folds": folds,
            "max_users": max_users,
            "llm": {"base_url": base_url, "model": STUB_MODEL},
            **extra,
        }
    )


@dataclass
class RunTimes:
    """Wall time of each phase of a run, in seconds."""

    load_s: float = 0.0
    plan_s: float = 0.0
    store_s: float = 0.0
    execute_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        """From reading the data files to the last job finished."""
        return self.load_s + self.plan_s + self.store_s + self.execute_s


def run_and_time(c: Cluster, config: RunConfig, run_id: str) -> tuple[Plan, RunTimes]:
    """Plan, store and follow a run to its end, as `lusifer run` does, timing each phase."""
    times = RunTimes()
    started = time.perf_counter()
    dataset = load_dataset(config)
    prompts = load_prompt_set(config.prompt_set, config.prompts_dir)
    times.load_s = time.perf_counter() - started
    started = time.perf_counter()
    plan = plan_run(run_id, config, dataset, prompts)
    times.plan_s = time.perf_counter() - started
    started = time.perf_counter()
    store_plan(c.engine, plan, dataset)
    times.store_s = time.perf_counter() - started
    started = time.perf_counter()
    set_run_status(c.engine, run_id, "running")
    app = make_celery(c.settings)
    # Progress bars would cost the coordinator CPU the workers need; the figures are printed.
    follow(
        c.engine,
        app,
        run_id,
        c.settings.queue,
        Console(file=io.StringIO()),
        lease_s=c.settings.job_lease_s,
        requeue_grace_s=c.settings.requeue_grace_s,
        health_check=watchdog(c, run_id),
    )
    times.execute_s = time.perf_counter() - started
    return plan, times


def watchdog(c: Cluster, run_id: str, stall_s: float = 180.0) -> Callable[[], None]:
    """A check that stops a figure whose workers died or that makes no progress."""
    progress = {"at": time.monotonic(), "finished": -1}

    def check() -> None:
        for process in c.workers.processes:
            if process.poll() is not None:
                raise ServiceError(f"a worker exited ({process.returncode}): {c.workers.logs}")
        now = time.monotonic()
        if now - progress["at"] < 10:
            return
        with Session(c.engine) as session:
            finished = session.exec(
                select(func.count()).where(
                    Job.run_id == run_id, col(Job.state).in_([JobState.DONE, JobState.FAILED])
                )
            ).one()
        if finished != progress["finished"]:
            progress.update(at=now, finished=finished)
        elif now - progress["at"] > stall_s:
            raise ServiceError(
                f"no job of {run_id} finished for {stall_s:.0f} s; see the worker logs "
                f"{[str(p) for p in c.workers.logs]}"
            )

    return check


@dataclass(frozen=True)
class RunCounts:
    """What a finished run holds: the proof that nothing was lost or done twice."""

    jobs: int
    jobs_done: int
    jobs_failed: int
    expected_ratings: int
    rated: int
    calls_recorded: int
    call_uses: int
    cache_hits: int

    @property
    def coverage_pct(self) -> float:
        """Share of the expected test ratings that got a simulated rating."""
        return 100.0 * self.rated / self.expected_ratings if self.expected_ratings else 0.0


def run_counts(engine: Engine, run_id: str) -> RunCounts:
    """Count jobs, ratings and calls of a run from the database."""
    with Session(engine) as session:
        states = dict(
            session.exec(
                select(Job.state, func.count()).where(Job.run_id == run_id).group_by(Job.state)
            ).all()
        )
        expected = session.exec(select(func.count()).where(SimulatedRating.run_id == run_id)).one()
        rated = session.exec(
            select(func.count()).where(
                SimulatedRating.run_id == run_id, col(SimulatedRating.rating).is_not(None)
            )
        ).one()
        uses = session.exec(select(func.count()).where(CallUse.run_id == run_id)).one()
        hits = session.exec(
            select(func.count()).where(CallUse.run_id == run_id, col(CallUse.cached))
        ).one()
        calls = session.exec(select(func.count()).select_from(LLMCall)).one()
    return RunCounts(
        jobs=sum(states.values()),
        jobs_done=states.get(JobState.DONE, 0),
        jobs_failed=states.get(JobState.FAILED, 0),
        expected_ratings=int(expected),
        rated=int(rated),
        calls_recorded=int(calls),
        call_uses=int(uses),
        cache_hits=int(hits),
    )
