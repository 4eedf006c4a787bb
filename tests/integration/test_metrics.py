"""`lusifer metrics` scraped during a real run (real Redis, PostgreSQL, Celery worker processes
and the stub LLM server over HTTP), its figures compared with the database and the broker; and
what a scrape says when the database or the broker misbehaves."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.integration.metrics_server import Scrape, metrics_server
from tests.integration.services import (
    PG_ADMIN,
    REDIS_DB,
    VENV_BIN,
    celery_workers,
    free_port,
    postgres_schema,
    run_cli,
    service_env,
    stub_run_args,
    stub_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh schema with Lusifer's tables, a queue of its own; its URL and environment."""
    queue = f"lusifer-metrics-{secrets.token_hex(3)}"
    with postgres_schema("lusifer_metrics") as url:
        env = service_env(url, queue, None, LUSIFER_TASK_EVENTS="0")
        created = run_cli(["init-db"], env, tmp_path, timeout=60)
        assert created.returncode == 0, created.stderr
        try:
            yield url, env
        finally:
            client = redis.Redis(port=6379, db=REDIS_DB)
            stale = list(client.scan_iter(match=f"*{queue}*"))
            if stale:
                client.delete(*stale)
            client.close()


def database_figures(url: str, run_id: str) -> dict[str, dict[tuple[str, ...], float]]:
    """The same figures, counted by plain SQL here (not the code under test)."""
    engine = create_engine(url, poolclass=NullPool)
    queries = {
        "jobs": "SELECT fold, kind, state, count(*) FROM job WHERE run_id = :r "
        "GROUP BY fold, kind, state",
        "stored": "SELECT fold, count(rating) FROM simulatedrating WHERE run_id = :r GROUP BY fold",
        "reasks": "SELECT fold, kind, sum(reasks) FROM job WHERE run_id = :r GROUP BY fold, kind",
        "calls": "SELECT u.fold, CASE WHEN u.cached THEN 'cache' ELSE 'api' END, count(*) "
        "FROM calluse u WHERE u.run_id = :r GROUP BY 1, 2",
        "retries": "SELECT fold, sum(retries) FROM calluse WHERE run_id = :r GROUP BY fold",
        "tokens": "SELECT u.fold, sum(c.prompt_tokens), sum(c.completion_tokens), "
        "sum(c.cost_usd), sum(c.latency_s), sum(CASE WHEN c.latency_s <= 0.5 THEN 1 ELSE 0 END) "
        "FROM calluse u JOIN llmcall c ON c.key = u.call_key "
        "WHERE u.run_id = :r AND NOT u.cached GROUP BY u.fold",
    }
    figures: dict[str, dict[tuple[str, ...], float]] = {}
    try:
        with engine.connect() as conn:
            for name, sql in queries.items():
                rows = conn.execute(text(sql), {"r": run_id}).all()
                if name == "tokens":
                    figures[name] = {(r[0],): tuple(float(x) for x in r[1:]) for r in rows}  # type: ignore[misc]
                else:
                    figures[name] = {tuple(str(x) for x in r[:-1]): float(r[-1]) for r in rows}
    finally:
        engine.dispose()
    return figures


def test_scrapes_during_a_run_follow_it_and_match_the_database_at_the_end(
    cluster: tuple[str, dict[str, str]], data_dir: Path, tmp_path: Path
) -> None:
    url, env = cluster
    queue = env["LUSIFER_QUEUE"]
    run_id = f"metrics-{secrets.token_hex(3)}"
    idle = f"{queue}-idle"
    # Every 3rd answer is a fault: a 500 retried inside the call, or a rating answer missing
    # items, which are re-asked.
    with (
        stub_server(
            "--latency", "0.15", "--fault-every-n", "3", "--faults", "500,missing_keys"
        ) as stub,
        metrics_server(
            env, tmp_path, "--min-interval", "0", "--queue", queue, "--queue", idle
        ) as metrics,
        celery_workers(env, tmp_path, count=2, threads=8),
    ):
        args = stub_run_args(
            stub.base_url,
            data_dir,
            run_id,
            "--folds",
            "u1,u2",
            "--max-users",
            "5",
            "--price-prompt",
            "1",
            "--price-completion",
            "2",
        )
        coordinator = subprocess.Popen(
            [str(VENV_BIN / "lusifer"), *args],
            env={**env, "COLUMNS": "120"},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        scrapes: list[Scrape] = []
        busy_scale: list[dict[str, object]] = []
        deadline = time.monotonic() + 240
        while coordinator.poll() is None and time.monotonic() < deadline:
            scrapes.append(metrics.scrape())
            scale = metrics.scale()
            if scale["active_jobs"]:
                busy_scale.append(scale)
            time.sleep(0.2)
        stdout, stderr = coordinator.communicate(timeout=30)
        assert coordinator.returncode == 0, stdout + stderr
        final = metrics.scrape()

        # During the run: the jobs were seen moving, and the counters never went back.
        during = [
            s
            for s in scrapes
            if s.total("lusifer_jobs", run=run_id, state="running")
            or s.total("lusifer_jobs", run=run_id, state="queued")
        ]
        assert during, f"no scrape saw a job queued or running in {len(scrapes)} scrapes"
        assert busy_scale and all(s["queued_messages"] is not None for s in busy_scale)
        calls = [s.total("lusifer_llm_calls_total", run=run_id) for s in scrapes] + [
            final.total("lusifer_llm_calls_total", run=run_id)
        ]
        assert calls == sorted(calls)
        assert max(s.seconds for s in scrapes) < 5

        # At the end: every figure equals the database's.
        db = database_figures(url, run_id)
        jobs = {
            (dict(ls)["fold"], dict(ls)["kind"], dict(ls)["state"]): v
            for ls, v in final.series("lusifer_jobs").items()
            if dict(ls)["run"] == run_id
        }
        assert jobs == db["jobs"]
        assert {k[2] for k in jobs} == {"done"}
        for (fold,), stored in db["stored"].items():
            assert final.value("lusifer_ratings_stored", run=run_id, fold=fold) == stored
            assert stored > 0
        for (fold, kind), reasks in db["reasks"].items():
            assert final.value("lusifer_reasks_total", run=run_id, fold=fold, kind=kind) == reasks
        assert sum(db["reasks"].values()) > 0, "the stub's prose answers were re-asked"
        for (fold, source), n in db["calls"].items():
            assert final.value("lusifer_llm_calls_total", run=run_id, fold=fold, source=source) == n
        for (fold,), n in db["retries"].items():
            assert final.value("lusifer_llm_retries_total", run=run_id, fold=fold) == n
        assert sum(db["retries"].values()) > 0, "the stub's 500s were retried"
        for (fold,), figures in db["tokens"].items():
            prompt, completion, cost, latency, fast = figures  # type: ignore[misc]
            labels = {"run": run_id, "fold": fold}
            assert final.value("lusifer_llm_tokens_total", **labels, type="prompt") == prompt
            assert (
                final.value("lusifer_llm_tokens_total", **labels, type="completion") == completion
            )
            assert final.value("lusifer_llm_cost_usd_total", **labels) == pytest.approx(cost)
            assert cost > 0
            api = db["calls"][(fold, "api")]
            name = "lusifer_llm_call_latency_seconds"
            assert final.value(f"{name}_count", **labels) == api
            assert final.value(f"{name}_bucket", **labels, le="+Inf") == api
            assert final.value(f"{name}_bucket", **labels, le="0.5") == fast
            assert final.value(f"{name}_sum", **labels) == pytest.approx(latency)
        assert final.value("lusifer_run_info", run=run_id, status="done") == 1
        assert final.value("lusifer_active_jobs", state="running") == 0
        assert metrics.scale()["active_jobs"] == 0

        # The queue length is the broker's: messages put in a queue that no worker consumes
        # show up in the next scrape.
        client = redis.Redis(port=6379, db=REDIS_DB)
        try:
            assert final.value("lusifer_queue_messages", queue=idle) == 0
            client.rpush(idle, *[f"not-a-message-{i}" for i in range(3)])
            assert metrics.scrape().value("lusifer_queue_messages", queue=idle) == 3
            assert metrics.scale()["queued_messages"] == 3
        finally:
            client.delete(idle)
            client.close()


def test_a_locked_database_costs_a_scrape_its_figures_not_its_answer(
    cluster: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = cluster
    schema = url.rsplit("%3D", 1)[1]
    with metrics_server(env, tmp_path, "--min-interval", "0", "--query-timeout", "1") as metrics:
        assert metrics.scrape().value("lusifer_source_up", source="database") == 1
        # Another session holds the run table: every read of it waits, until the timeout.
        with psycopg.connect(PG_ADMIN) as blocker:
            blocker.execute(f'LOCK TABLE "{schema}".run IN ACCESS EXCLUSIVE MODE')
            scrape = metrics.scrape(timeout=15)
            assert scrape.seconds < 5
            assert scrape.value("lusifer_source_up", source="database") == 0
            assert scrape.value("lusifer_source_up", source="broker") == 1
            assert scrape.value("lusifer_queue_messages", queue=env["LUSIFER_QUEUE"]) == 0
            assert not scrape.series("lusifer_jobs")
            assert metrics.get("/ready").status_code == 503
            assert metrics.get("/scale").status_code == 503
            blocker.rollback()
        assert metrics.scrape().value("lusifer_source_up", source="database") == 1
        assert metrics.get("/ready").status_code == 200
    assert "Traceback" not in metrics.log.read_text()


def test_an_unreachable_broker_leaves_the_database_figures(
    cluster: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = cluster
    env = {**env, "LUSIFER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with metrics_server(env, tmp_path, "--query-timeout", "1") as metrics:
        scrape = metrics.scrape(timeout=15)
        assert scrape.seconds < 5
        assert scrape.value("lusifer_source_up", source="broker") == 0
        assert scrape.value("lusifer_source_up", source="database") == 1
        assert scrape.value("lusifer_active_jobs", state="queued") == 0
        assert metrics.scale()["queued_messages"] is None


def test_bad_start_is_one_line_and_exit_1(
    cluster: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = cluster
    closed = free_port()
    no_db = {**env, "LUSIFER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x"}
    result = run_cli(["metrics", "--port", str(free_port())], no_db, tmp_path, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(closed) in lines[0]
    with socket.socket() as taken_port:
        taken_port.bind(("127.0.0.1", 0))
        taken_port.listen()
        port = str(taken_port.getsockname()[1])
        taken = run_cli(["metrics", "--port", port], env, tmp_path, timeout=120)
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"
    ]
