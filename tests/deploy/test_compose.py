"""docker-compose.yml: its structure, and every app service's command run as a local process.

There is no Docker engine in the test environment, so the compose file is read as data: the
commands and environment of each app service are resolved the way compose would (``${VAR}``,
``${VAR:-default}``, ``${VAR:?message}``), the service hosts ``redis`` and ``postgres`` are
remapped to this machine, and each command runs through ``deploy/entrypoint.sh`` as the image
would run it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
import yaml
from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

import lusifer.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from lusifer.core.settings import Settings
from lusifer.queue import make_celery

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
APP_SERVICES = ("migrate", "worker", "flower", "metrics", "coordinator")
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "AUTH")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, and $$ for "$".
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(LookupError):
    """A ``${VAR:?message}`` whose variable is unset (compose refuses to start)."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Substitute variables the way docker compose does."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        value = variables.get(name)
        empty = value is None or (value == "" and operator is not None and operator[0] == ":")
        if operator in (":-", "-"):
            return argument if empty else str(value)
        if operator in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {argument}")
            return str(value)
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def variables_in(text: str) -> set[str]:
    """Names of the variables a string interpolates."""
    return {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(1)}


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def service_environment(service: Mapping[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    """The container environment of a service; a key without a value passes the host's."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    env: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            if key in host:
                env[key] = host[key]
        else:
            env[key] = interpolate(str(value), host)
    return env


def service_command(service: Mapping[str, Any], host: Mapping[str, str]) -> list[str]:
    """The resolved command of a service (a string is split like a shell would)."""
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(interpolate(command, host))
    return [interpolate(str(part), host) for part in command]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- The compose file as data -------------------------------------------------------------


def test_expected_services_exist() -> None:
    services = load_compose()["services"]
    assert {"redis", "postgres", *APP_SERVICES} <= set(services)


def test_startup_order_and_one_shot_roles() -> None:
    services = load_compose()["services"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck"
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert {k: v["condition"] for k, v in migrate["depends_on"].items()} == {
        "redis": "service_healthy",
        "postgres": "service_healthy",
    }
    for name in ("worker", "coordinator"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    coordinator = services["coordinator"]
    assert coordinator.get("profiles") or coordinator.get("restart") == "no"
    assert any(v.endswith(":/data:ro") for v in coordinator["volumes"])
    assert coordinator["environment"]["LUSIFER_DATA_DIR"] == "/data"


def test_worker_is_scalable() -> None:
    worker = load_compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed name prevents --scale worker=N"
    assert "ports" not in worker, "fixed host ports prevent --scale worker=N"
    assert worker["stop_grace_period"], "workers need time to finish a job on SIGTERM"


def test_flower_requires_basic_auth_from_the_environment() -> None:
    command = load_compose()["services"]["flower"]["command"]
    args = shlex.split(command) if isinstance(command, str) else command
    auth = [a for a in args if a.startswith("--basic-auth")]
    assert len(auth) == 1, args
    value = auth[0].split("=", 1)[1]
    assert re.fullmatch(r"\$\{FLOWER_USER:\?[^}]*\}:\$\{FLOWER_PASSWORD:\?[^}]*\}", value), value
    with pytest.raises(MissingVariable):
        interpolate(value, {"FLOWER_USER": "admin"})


def test_no_literal_secrets() -> None:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)
    for name, service in load_compose()["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if not any(word in key for word in SECRET_WORDS) or value is None:
                continue
            # The whole value is one interpolation, and it has no default to fall back on.
            assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{name}.{key}={value}"
    anchor = load_compose()["x-lusifer-env"]
    key = anchor["LUSIFER_LLM_API_KEY"]
    assert key is None or re.fullmatch(r"\$\{LUSIFER_LLM_API_KEY(:?\?[^}]*)?\}", key), key
    # Secrets inside URLs and commands come from variables that have no default.
    for var in variables_in(text):
        if any(word in var for word in SECRET_WORDS):
            assert not re.search(r"\$\{" + var + r":?-", text), f"{var} has a default value"


def test_app_services_share_one_image_and_environment() -> None:
    compose = load_compose()
    anchor = compose["x-lusifer-env"]
    images = set()
    for name in APP_SERVICES:
        service = compose["services"][name]
        build = service["build"]
        images.add((service["image"], build["context"], build["dockerfile"]))
        assert "entrypoint" not in service, f"{name} must keep the image's entrypoint"
        env = service["environment"]
        assert {k: env[k] for k in anchor} == anchor, f"{name} does not use x-lusifer-env"
    assert images == {("lusifer:latest", ".", "deploy/Dockerfile")}
    assert (ROOT / "deploy" / "Dockerfile").is_file()


def test_broker_and_database_urls_come_from_the_environment() -> None:
    anchor = load_compose()["x-lusifer-env"]
    host = {"REDIS_PASSWORD": "r3d1s", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p4ss",
            "POSTGRES_DB": "d"}  # fmt: skip
    broker = urlsplit(interpolate(anchor["LUSIFER_BROKER_URL"], host))
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert broker.password == "r3d1s"
    database = make_url(interpolate(anchor["LUSIFER_DATABASE_URL"], host))
    assert database.drivername == "postgresql+psycopg"
    assert (database.host, database.username, database.password, database.database) == (
        "postgres",
        "u",
        "p4ss",
        "d",
    )
    with pytest.raises(MissingVariable):
        interpolate(anchor["LUSIFER_BROKER_URL"], {})
    with pytest.raises(MissingVariable):
        interpolate(anchor["LUSIFER_DATABASE_URL"], {"POSTGRES_USER": "u"})


def test_env_example_lists_every_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    settings = {f"LUSIFER_{name.upper()}" for name in Settings.model_fields}
    used = variables_in(COMPOSE_FILE.read_text()) | set(load_compose()["x-lusifer-env"])
    assert settings - named == set()
    assert used - named == set()
    assert not re.search(r"^[A-Z_]*(PASSWORD|API_KEY|USER)=\S", example, flags=re.MULTILINE)


# --- The app services' commands, run as local processes -----------------------------------


@dataclass
class Cluster:
    """The local stand-ins for compose's redis and postgres, and the host environment."""

    broker_url: str
    database_url: str
    schema: str
    queue: str
    host: dict[str, str]
    workdir: Path

    def env(self, service: str) -> dict[str, str]:
        """The process environment of a compose service, with hosts remapped to this machine."""
        spec = load_compose()["services"][service]
        env = service_environment(spec, self.host)
        broker = urlsplit(env["LUSIFER_BROKER_URL"])
        assert (broker.hostname, broker.password) == ("redis", self.host["REDIS_PASSWORD"])
        database = make_url(env["LUSIFER_DATABASE_URL"])
        assert (database.host, database.password) == ("postgres", self.host["POSTGRES_PASSWORD"])
        # The local Redis has no password and PostgreSQL trusts local connections.
        env["LUSIFER_BROKER_URL"] = self.broker_url
        env["LUSIFER_DATABASE_URL"] = self.database_url
        for volume in spec.get("volumes", []):
            source, target = interpolate(volume, self.host).split(":")[:2]
            env = {k: source if v == target else v for k, v in env.items()}
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LUSIFER_", "OPENAI_", "FLOWER_", "CELERY_", "REDIS_", "PG"))
        }
        path = f"{VENV_BIN}{os.pathsep}{inherited.get('PATH', '')}"
        return {**inherited, "PATH": path, "PYTHONUNBUFFERED": "1", **env}

    def command(self, service: str) -> list[str]:
        """The service's command run through the image's entrypoint."""
        return [str(ENTRYPOINT), *service_command(load_compose()["services"][service], self.host)]


def _reachable() -> str | None:
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2).ping()
        psycopg.connect(PG_ADMIN_URL, connect_timeout=2).close()
    except Exception as err:
        return str(err).strip().splitlines()[0]
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = _reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Redis or PostgreSQL unreachable in CI: {problem}")
        pytest.skip(f"needs Redis at {REDIS_HOST}:{REDIS_PORT} and {PG_ADMIN_URL}: {problem}")
    token = secrets.token_hex(4)
    schema = f"lusifer_compose_{token}"
    queue = f"lusifer-compose-{token}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # What compose would read from the shell or .env; the secrets are throwaway values.
    host = {
        "REDIS_PASSWORD": f"redis-{token}",
        "POSTGRES_PASSWORD": f"postgres-{token}",
        "FLOWER_USER": "lusifer",
        "FLOWER_PASSWORD": f"flower-{token}",
        "LUSIFER_QUEUE": queue,
        "LUSIFER_WORKER_CONCURRENCY": "2",
        "LUSIFER_WAIT_TIMEOUT": "20",
    }
    try:
        yield Cluster(
            broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            database_url=(
                "postgresql+psycopg://postgres@127.0.0.1:5432/test"
                f"?options=-csearch_path%3D{schema}"
            ),
            schema=schema,
            queue=queue,
            host=host,
            workdir=tmp_path_factory.mktemp("compose"),
        )
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        stale = list(client.scan_iter(match=f"*{queue}*"))  # the queue and kombu's bindings
        if stale:
            client.delete(*stale)
        client.close()


def start(cluster: Cluster, service: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a role in its own process group (so that it and its children can be killed)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            env=cluster.env(service),
            cwd=cluster.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a role's process group if it is still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def run_to_end(
    cluster: Cluster, service: str, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot role and collect its output."""
    proc = subprocess.Popen(
        args,
        env=cluster.env(service),
        cwd=cluster.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_migrate_creates_the_tables(cluster: Cluster) -> None:
    result = run_to_end(cluster, "migrate", cluster.command("migrate"), timeout=45)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wait_for: broker and database ready" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    engine = create_engine(cluster.database_url, poolclass=NullPool)
    try:
        tables = set(inspect(engine).get_table_names(schema=cluster.schema))
    finally:
        engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables


def test_metrics_serves_both_sources_and_stops_on_sigterm(cluster: Cluster, tmp_path: Path) -> None:
    args = cluster.command("metrics")
    port = free_port()
    assert args[args.index("--port") + 1] == "9808"
    args[args.index("--port") + 1] = str(port)
    assert args[args.index("--host") + 1] == "0.0.0.0"  # reachable from other containers
    args[args.index("--host") + 1] = "127.0.0.1"
    migrate = run_to_end(cluster, "migrate", cluster.command("migrate"), timeout=90)
    assert migrate.returncode == 0, migrate.stderr
    log = tmp_path / "metrics.log"
    metrics = start(cluster, "metrics", args, log)
    try:
        text = None
        deadline = time.monotonic() + 120  # the CLI's imports take seconds on a busy machine
        with httpx.Client(timeout=10) as http:
            while text is None and time.monotonic() < deadline:
                assert metrics.poll() is None, log.read_text()
                try:
                    text = http.get(f"http://127.0.0.1:{port}/metrics").text
                except httpx.TransportError:
                    time.sleep(0.3)
        assert text is not None, log.read_text()
        assert 'lusifer_source_up{source="database"} 1.0' in text
        assert 'lusifer_source_up{source="broker"} 1.0' in text
        assert f'lusifer_queue_messages{{queue="{cluster.queue}"}} 0.0' in text
        metrics.send_signal(signal.SIGTERM)
        assert metrics.wait(timeout=20) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        kill(metrics)


def _worker_node(app: Any, queue: str) -> str | None:
    """The node name of a worker consuming ``queue``, if one answers."""
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    for node, queues in replies.items():
        if any(q["name"] == queue for q in queues):
            return str(node)
    return None


def test_worker_and_flower_start_answer_and_stop(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    flower_args = cluster.command("flower")
    ports = [i for i, a in enumerate(flower_args) if a == "--port=5555"]
    assert len(ports) == 1, flower_args
    flower_args[ports[0]] = f"--port={port}"
    worker = start(cluster, "worker", cluster.command("worker"), tmp_path / "worker.log")
    flower = start(cluster, "flower", flower_args, tmp_path / "flower.log")
    app = make_celery(Settings(_env_file=None, broker_url=cluster.broker_url, queue=cluster.queue))

    def logs() -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')}"
            for log in sorted(tmp_path.glob("*.log"))
        )

    try:
        # The worker answers a ping and consumes the queue of the compose environment.
        node = None
        # `lusifer worker` imports the CLI, then Celery and the worker: tens of seconds when the
        # machine is busy (2 cores shared by many processes).
        deadline = time.monotonic() + 120
        while node is None and time.monotonic() < deadline:
            assert worker.poll() is None, logs()
            node = _worker_node(app, cluster.queue)
        assert node is not None, logs()
        pongs: list[dict[str, Any]] = []
        while not pongs and time.monotonic() < deadline:
            pongs = app.control.ping(destination=[node], timeout=1.0)
        assert pongs and pongs[0][node] == {"ok": "pong"}, logs()

        # Flower listens, refuses anonymous requests and lets the configured user in.
        base = f"http://127.0.0.1:{port}"
        auth = (cluster.host["FLOWER_USER"], cluster.host["FLOWER_PASSWORD"])
        with httpx.Client(timeout=10) as http:
            anonymous = None
            while anonymous is None and time.monotonic() < deadline + 15:
                assert flower.poll() is None, logs()
                try:
                    anonymous = http.get(f"{base}/api/workers")
                except httpx.TransportError:
                    time.sleep(0.3)
            assert anonymous is not None, logs()
            assert anonymous.status_code == 401
            assert http.get(f"{base}/", auth=(auth[0], "wrong")).status_code == 401
            assert http.get(f"{base}/", auth=auth).status_code == 200
            # Prometheus scrapes Flower's own metrics without the login (deploy/prometheus).
            exposition = http.get(f"{base}/metrics")
            assert exposition.status_code == 200
            assert "flower_events_total" in exposition.text
            seen: dict[str, Any] = {}
            while node not in seen and time.monotonic() < deadline + 30:
                answer = http.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth)
                assert answer.status_code == 200, answer.text
                seen = answer.json()
            assert node in seen, f"Flower does not see {node}: {sorted(seen)}"

        # SIGTERM is a warm shutdown: the worker stops cleanly.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, logs()
        assert "Traceback" not in logs()
        flower.send_signal(signal.SIGTERM)
        flower.wait(timeout=15)
    finally:
        kill(worker)
        kill(flower)
        app.close()


def test_coordinator_command_runs_and_reports_an_unreachable_llm(
    cluster: Cluster, data_dir: Path
) -> None:
    # The coordinator's data volume is the real data directory (skipped when it is unset).
    cluster.host["LUSIFER_DATA_HOST_DIR"] = str(data_dir)
    assert cluster.env("coordinator")["LUSIFER_DATA_DIR"] == str(data_dir)
    closed = free_port()
    args = [*cluster.command("coordinator"), "--base-url", f"http://127.0.0.1:{closed}/v1",
            "--model", "m"]  # fmt: skip
    assert args[1:3] == ["lusifer", "run"], args
    result = run_to_end(cluster, "coordinator", args, timeout=45)
    output = result.stdout + result.stderr
    assert result.returncode not in (0, None), output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("wait_for:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error:")
    assert "unreachable" in errors[0] or "cannot connect" in errors[0], errors[0]
    assert f"127.0.0.1:{closed}" in errors[0]
