"""Real services for integration tests: a PostgreSQL schema, a Redis queue, the stub LLM
server and Celery worker processes, each started as the product starts them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from coordinator.local import worker_command

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_DB = 11
VENV_BIN = Path(sys.executable).parent


@contextmanager
def postgres_schema(prefix: str = "lusifer_it") -> Iterator[str]:
    """A fresh schema in the `test` database; yields a SQLAlchemy URL that uses it."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Stub:
    """A stub LLM server process."""

    base_url: str
    process: subprocess.Popen[str]

    def requests(self) -> list[dict[str, Any]]:
        """The server's request log."""
        root = self.base_url.removesuffix("/v1")
        data: list[dict[str, Any]] = httpx.get(f"{root}/_stub/requests", timeout=10).json()
        return data

    def chat_count(self) -> int:
        """Chat completion requests served so far."""
        return sum(1 for r in self.requests() if r["path"].endswith("/chat/completions"))

    def reset(self) -> None:
        """Clear the request log and restart the fault sequence."""
        root = self.base_url.removesuffix("/v1")
        httpx.post(f"{root}/_stub/reset", timeout=10).raise_for_status()

    def stats(self) -> dict[str, int]:
        """Chat requests in flight now and at most so far."""
        root = self.base_url.removesuffix("/v1")
        data: dict[str, int] = httpx.get(f"{root}/_stub/stats", timeout=10).json()
        return data

    def configure(self, **fields: Any) -> None:
        """Change latency or faults at run time."""
        root = self.base_url.removesuffix("/v1")
        httpx.post(f"{root}/_stub/config", json=fields, timeout=10).raise_for_status()


@contextmanager
def stub_server(*args: str, api_key: str | None = None) -> Iterator[Stub]:
    """Start `python -m lusifer.stub` and wait for its base URL line."""
    env = {**os.environ}
    if api_key:
        env["LUSIFER_STUB_API_KEY"] = api_key
    process = subprocess.Popen(
        [sys.executable, "-m", "lusifer.stub", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("http://"), f"stub printed {line!r}"
        yield Stub(line, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def service_env(database_url: str, queue: str, api_key: str | None, **extra: str) -> dict[str, str]:
    """The environment of a cluster process (coordinator or worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    env.update(
        LUSIFER_BROKER_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        LUSIFER_DATABASE_URL=database_url,
        LUSIFER_QUEUE=queue,
        LUSIFER_LOG_LEVEL="INFO",
        LUSIFER_LLM_BACKOFF_MAX_S="0.5",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if api_key:
        env["LUSIFER_LLM_API_KEY"] = api_key
    env.update(extra)
    return env


@dataclass
class Workers:
    """Celery worker processes started with `celery -A workers.app worker`."""

    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log_text(self) -> str:
        """Everything the workers wrote."""
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def _worker_start(threads: int | None, queue: str) -> list[str]:
    if threads is None:  # the product's own defaults
        return [str(VENV_BIN / "lusifer"), "worker"]
    return worker_command(queue, threads)


def start_worker(
    env: dict[str, str],
    log: Path,
    threads: int | None = 4,
    name: str = "it",
    loglevel: str = "INFO",
) -> subprocess.Popen[bytes]:
    """Start one worker process the way the product does, its output going to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                *_worker_start(threads, env["LUSIFER_QUEUE"]),
                *("--loglevel", loglevel, "--hostname", f"{name}-{secrets.token_hex(3)}@%h"),
                *("--without-gossip", "--without-mingle"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM (a warm shutdown for workers) every live process, SIGKILL what outlives it."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def celery_workers(
    env: dict[str, str],
    log_dir: Path,
    count: int = 2,
    threads: int | None = 4,
    loglevel: str = "INFO",
) -> Iterator[Workers]:
    """Start real worker processes; stop them with SIGTERM (warm shutdown) at the end.

    ``threads=None`` starts them as `lusifer worker`, with the product's default concurrency.
    """
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for index in range(count):
            log = log_dir / f"worker-{index}-{secrets.token_hex(2)}.log"
            logs.append(log)
            processes.append(start_worker(env, log, threads, name=f"it{index}", loglevel=loglevel))
        yield Workers(processes, logs)
    finally:
        stop_processes(processes)


def stub_run_args(base_url: str, data_dir: Path, run_id: str, *options: str) -> list[str]:
    """`lusifer run` against the stub's model on MovieLens, with more options after."""
    return [
        "run",
        "--base-url",
        base_url,
        "--model",
        "stub-model",
        "--data-dir",
        str(data_dir),
        "--run-id",
        run_id,
        *options,
    ]


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the `lusifer` command as a user would."""
    return subprocess.run(
        [str(VENV_BIN / "lusifer"), *args],
        env={**env, "COLUMNS": "120"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A `redis-server` of the test's own, on its own port, that a test may stop and restart.

    Without persistence (no RDB snapshot, no AOF) a restart loses every queued message: the
    harder case for the product, which must notice and send those jobs again.
    """

    def __init__(self, work_dir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.work_dir = work_dir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """The broker URL of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--save", "", "--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.work_dir), *persistence),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM: with persistence it writes its data first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self, down_s: float = 2.0) -> None:
        """Stop, stay down for ``down_s`` seconds, and start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()
        self.restarts += 1


@contextmanager
def redis_server(work_dir: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    """A private Redis for the duration of a test."""
    server = RedisServer(work_dir, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
