"""What Flower shows of a run: job ids as task arguments, and never the LLM's API key.

Flower, the worker and the coordinator run with the commands and environment that
docker-compose.yml gives them (see ``test_compose``), against the stub LLM, which accepts
only a recognisable key.
"""

from __future__ import annotations

import ast
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from lusifer.store.engines import get_engine
from lusifer.store.tables import Job, JobKind
from tests.deploy.test_compose import (  # noqa: F401  (cluster is a fixture)
    Cluster,
    cluster,
    free_port,
    kill,
    run_to_end,
    start,
)
from tests.integration.services import stub_server

pytestmark = pytest.mark.integration

API_KEY = "sk-flower-canary-" + secrets.token_hex(8)


def _wait_for_flower(
    http: httpx.Client, base: str, flower: subprocess.Popen[bytes], logs: Path
) -> None:
    deadline = time.monotonic() + 45
    while True:
        assert flower.poll() is None, logs.read_text(errors="replace")
        try:
            http.get(f"{base}/healthcheck")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, logs.read_text(errors="replace")
            time.sleep(0.3)


def test_flower_shows_job_ids_only_and_never_the_key(
    cluster: Cluster,  # noqa: F811
    data_dir: Path,
    tmp_path: Path,
) -> None:
    run_id = f"flower-{secrets.token_hex(3)}"
    cluster.host["LUSIFER_LLM_API_KEY"] = API_KEY
    cluster.host["LUSIFER_DATA_HOST_DIR"] = str(data_dir)
    assert cluster.env("worker")["LUSIFER_LLM_API_KEY"] == API_KEY
    port = free_port()
    flower_args = [f"--port={port}" if a == "--port=5555" else a for a in cluster.command("flower")]
    assert f"--port={port}" in flower_args and any(
        a.startswith("--basic-auth=") for a in flower_args
    )
    base = f"http://127.0.0.1:{port}"
    auth = (cluster.host["FLOWER_USER"], cluster.host["FLOWER_PASSWORD"])
    flower = start(cluster, "flower", flower_args, tmp_path / "flower.log")
    worker = start(cluster, "worker", cluster.command("worker"), tmp_path / "worker.log")
    try:
        with stub_server(api_key=API_KEY) as stub, httpx.Client(timeout=10) as http:
            _wait_for_flower(http, base, flower, tmp_path / "flower.log")
            # Flower listens before the run starts, so it sees every task event.
            result = run_to_end(
                cluster,
                "coordinator",
                [
                    *cluster.command("coordinator"),
                    *("--base-url", stub.base_url, "--model", "stub-model"),
                    *("--folds", "u1", "--users", "7", "--run-id", run_id),
                ],
                timeout=180,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            with Session(get_engine(cluster.database_url)) as session:
                job_ids = set(session.exec(select(Job.id).where(Job.run_id == run_id)).all())
                # Rating jobs run in the worker of their profile job: only these are tasks.
                profile_ids = set(
                    session.exec(
                        select(Job.id).where(Job.run_id == run_id, Job.kind == JobKind.PROFILE)
                    ).all()
                )
            assert len(job_ids) > 1 and profile_ids

            # Without credentials Flower answers nothing but 401.
            assert http.get(f"{base}/api/tasks").status_code == 401
            assert http.get(f"{base}/api/tasks", auth=(auth[0], "wrong")).status_code == 401

            tasks: dict[str, dict[str, object]] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answer = http.get(f"{base}/api/tasks", auth=auth)
                assert answer.status_code == 200, answer.text
                tasks = answer.json()
                done = [t for t in tasks.values() if t.get("state") == "SUCCESS"]
                if len(done) >= len(profile_ids):
                    break
                time.sleep(0.5)
            # Every task Flower shows carries one job id of this run, and nothing else.
            shown = [ast.literal_eval(str(task["args"])) for task in tasks.values()]
            assert all(len(args) == 1 and args[0] in job_ids for args in shown), shown
            assert profile_ids <= {args[0] for args in shown}
            assert all(str(task["kwargs"]) in ("{}", "None") for task in tasks.values())

            # The key appears in no answer Flower gives: task lists and details, workers
            # (with their configuration), the pages people look at.
            pages = [
                http.get(f"{base}/api/tasks", auth=auth).text,
                http.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth).text,
                http.get(f"{base}/tasks", auth=auth).text,
                http.get(f"{base}/workers", auth=auth).text,
                http.get(f"{base}/", auth=auth).text,
            ]
            pages += [http.get(f"{base}/api/task/info/{uid}", auth=auth).text for uid in tasks]
            for page in pages:
                assert API_KEY not in page
            assert stub.chat_count() > 0  # the key was in use all along
        logs = (tmp_path / "flower.log").read_text() + (tmp_path / "worker.log").read_text()
        assert API_KEY not in logs + result.stdout + result.stderr
    finally:
        kill(worker)
        kill(flower)
