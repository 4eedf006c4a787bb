"""Broker credentials: a password-protected Redis and Redis over TLS (rediss://), each a real
redis-server this test starts on its own port, carry a run of real Celery workers to the end;
a wrong password or a missing CA is one clear line; the password is printed nowhere."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import Session, func, select

from lusifer.store.engines import get_engine
from lusifer.store.tables import SimulatedRating
from tests.integration.services import (
    Stub,
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)
from tests.tiny_data import write_tiny_movielens

pytestmark = pytest.mark.integration

API_KEY = "sk-creds-" + secrets.token_hex(6)
PASSWORD = "pw-" + secrets.token_hex(8)
RATED = 4  # users 1 and 2 of the tiny dataset, two test items each; user 3 has no history


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(work: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own, without persistence; stopped at the end."""
    log = work / f"redis-{secrets.token_hex(2)}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(work), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "Ready to accept connections" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"redis-server did not start: {log.read_text()[-300:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    with stub_server(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_schema("lusifer_creds") as url:
        yield url


def _run(
    broker_url: str, database_url: str, stub: Stub, work: Path, workers: bool
) -> tuple[subprocess.CompletedProcess[str], str]:
    """`lusifer run` on the tiny dataset (with one worker when asked); output and worker log."""
    queue = f"creds-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, API_KEY, LUSIFER_BROKER_URL=broker_url)
    ml = work / "ml" if (work / "ml").is_dir() else write_tiny_movielens(work)
    args = ["run", "--data-dir", str(ml), "--folds", "u1", "--base-url", stub.base_url,
            "--model", "stub-model", "--run-id", queue]  # fmt: skip
    if not workers:
        return run_cli(args, env, work, timeout=120), ""
    with celery_workers(env, work, count=1, threads=4) as pool:
        result = run_cli(args, env, work, timeout=240)
    return result, pool.log_text()


def _rated(database_url: str) -> int:
    with Session(get_engine(database_url)) as session:
        return session.exec(
            select(func.count()).where(SimulatedRating.rating != None)  # noqa: E711
        ).one()


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def _assert_nothing_written(database_url: str) -> None:
    assert not inspect(get_engine(database_url)).has_table("run")


def test_password_protected_broker(stub: Stub, database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    with redis_server(tmp_path, "--port", str(port), "--requirepass", PASSWORD):
        wrong, _ = _run(
            f"redis://:not-{PASSWORD}@127.0.0.1:{port}/0", database_url, stub, tmp_path, False
        )
        _assert_one_line_failure(wrong, "broker", "unreachable", "LUSIFER_BROKER_URL")
        assert "invalid username-password pair" in wrong.stderr or "WRONGPASS" in wrong.stderr
        assert PASSWORD not in wrong.stdout + wrong.stderr
        _assert_nothing_written(database_url)

        result, worker_log = _run(
            f"redis://:{PASSWORD}@127.0.0.1:{port}/0", database_url, stub, tmp_path, True
        )

    assert result.returncode == 0, result.stdout + result.stderr
    assert _rated(database_url) == RATED
    # Celery logs the broker URL it connected to, with the password masked.
    assert f"Connected to redis://:**@127.0.0.1:{port}/0" in worker_log
    for text in (result.stdout, result.stderr, worker_log):
        assert PASSWORD not in text
    assert API_KEY not in result.stdout + result.stderr + worker_log


def _certificates(work: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "1", "-subj", "/CN=lusifer-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=localhost")  # fmt: skip
    (work / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1",
            "-extfile", "san.cnf")  # fmt: skip
    return work / "ca.pem"


def test_tls_broker_with_its_ca(stub: Stub, database_url: str, tmp_path: Path) -> None:
    ca = _certificates(tmp_path)
    port = _free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.pem",
           "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
           "--tls-auth-clients", "no", "--requirepass", PASSWORD]  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    with redis_server(tmp_path, *tls):
        # The server's CA is not among the system's: without ssl_ca_certs it is refused.
        untrusted, _ = _run(url, database_url, stub, tmp_path, False)
        _assert_one_line_failure(untrusted, "broker", "certificate verify failed")
        assert PASSWORD not in untrusted.stdout + untrusted.stderr
        _assert_nothing_written(database_url)

        result, worker_log = _run(
            f"{url}?ssl_cert_reqs=required&ssl_ca_certs={ca}", database_url, stub, tmp_path, True
        )

    assert result.returncode == 0, result.stdout + result.stderr
    assert _rated(database_url) == RATED
    assert f"Connected to rediss://:**@127.0.0.1:{port}/0" in worker_log
    for text in (result.stdout, result.stderr, worker_log):
        assert PASSWORD not in text


def test_database_password_is_never_printed(database_url: str, tmp_path: Path) -> None:
    # The server trusts local connections, so any password is accepted: what matters here is
    # that the URL holding it is printed masked.
    with_password = database_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    env = service_env(with_password, "unused", None)
    ready = run_cli(["init-db"], env, tmp_path, timeout=120)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    for command in (["report", "ghost"], ["resume", "ghost"], ["status", "ghost"]):
        result = run_cli(command, env, tmp_path, timeout=120)
        _assert_one_line_failure(result, "ghost")
        assert PASSWORD not in result.stdout + result.stderr
