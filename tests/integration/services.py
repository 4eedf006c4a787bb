"""Real services for integration tests: a PostgreSQL schema, a Redis queue, the stub LLM
server and Celery worker processes, each started as the product starts them."""

from __future__ import annotations

import os
import secrets
import signal
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


@contextmanager
def celery_workers(
    env: dict[str, str], log_dir: Path, count: int = 2, threads: int = 4, loglevel: str = "INFO"
) -> Iterator[Workers]:
    """Start real worker processes; stop them with SIGTERM (warm shutdown) at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for index in range(count):
            log = log_dir / f"worker-{index}-{secrets.token_hex(2)}.log"
            logs.append(log)
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "workers.app",
                            "worker",
                            "--pool",
                            "threads",
                            "--concurrency",
                            str(threads),
                            "-Q",
                            env["LUSIFER_QUEUE"],
                            "--loglevel",
                            loglevel,
                            "--hostname",
                            f"it{index}-{secrets.token_hex(3)}@%h",
                            "--without-gossip",
                            "--without-mingle",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
        yield Workers(processes, logs)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


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
