"""A multi-user, two-fold run through real Redis, real PostgreSQL, real Celery worker
processes and the stub LLM server over HTTP, driven by the `lusifer` command in cluster mode."""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy import text
from sqlmodel import Session, func, select

from coordinator.aggregate import aggregate_fold
from lusifer.core.errors import ExitCode
from lusifer.data import load_movielens_100k
from lusifer.store.engines import get_engine
from lusifer.store.tables import (
    CallUse,
    Job,
    JobKind,
    JobState,
    LLMCall,
    ProfileStep,
    SimulatedRating,
)
from tests.integration.services import (
    REDIS_DB,
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_server,
)

pytestmark = pytest.mark.integration

API_KEY = "sk-canary-" + secrets.token_hex(8)
FOLDS = ("u1", "u2")
USERS = 4


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


class BrokerTap:
    """Every command Redis receives while it runs (MONITOR), to inspect what messages carry."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=2)
            try:
                with client.monitor() as monitor:
                    while not self._stop.is_set():
                        command = monitor.next_command()
                        self.lines.append(str(command.get("command", "")))
            except redis.TimeoutError:
                continue  # a quiet second: listen again

    def __enter__(self) -> BrokerTap:
        self._thread.start()
        time.sleep(0.5)  # MONITOR is active before the run starts
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def job_arguments(self, queue: str) -> list[list[object]]:
        """The arguments of every task message pushed onto ``queue``."""
        found = []
        for line in self.lines:
            if not line.startswith(f"LPUSH {queue} "):
                continue
            message = json.loads(line.split(" ", 2)[2])
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            assert kwargs == {}
            found.append(args)
        return found


def _hand_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    diff = np.abs(true - pred)
    return {
        "rmse": float(np.sqrt(np.mean((true - pred) ** 2))),
        "mae": float(np.mean(diff)),
        "pearson": float(np.corrcoef(true, pred)[0, 1]),
        "exact": 100.0 * float(np.mean(diff == 0)),
        "off1": 100.0 * float(np.mean(diff == 1)),
        "close": 100.0 * float(np.mean(diff <= 1)),
    }


def test_two_fold_run_completes_with_correct_metrics_and_no_leaks(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"it-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, API_KEY)
    run_id = f"it-{secrets.token_hex(3)}"
    args = [
        "run",
        "--base-url",
        "",
        "--model",
        "stub-model",
        "--folds",
        ",".join(FOLDS),
        "--max-users",
        str(USERS),
        "--data-dir",
        str(data_dir),
        "--run-id",
        run_id,
        "--price-prompt",
        "0.5",
        "--price-completion",
        "1.5",
    ]
    with stub_server(api_key=API_KEY) as stub, celery_workers(env, tmp_path) as workers:
        args[2] = stub.base_url
        with BrokerTap() as tap:
            result = run_cli(args, env, tmp_path)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "mean ± std" in result.stdout
        chat_calls = stub.chat_count()
        log_text = workers.log_text()

        engine = get_engine(database_url)
        with Session(engine) as session:
            jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
            assert jobs and all(job.state == JobState.DONE for job in jobs)
            rows = session.exec(
                select(SimulatedRating).where(SimulatedRating.run_id == run_id)
            ).all()
            # Every expected test rating is present exactly once and was simulated.
            keys = [(r.fold, r.user_id, r.item_id) for r in rows]
            assert len(keys) == len(set(keys))
            assert all(r.rating in {1, 2, 3, 4, 5} for r in rows)
            steps = session.exec(select(ProfileStep).where(ProfileStep.run_id == run_id)).all()
            calls = session.exec(select(func.count()).select_from(LLMCall)).one()
            uses = session.exec(
                select(func.count()).where(CallUse.run_id == run_id, CallUse.cached == False)  # noqa: E712
            ).one()

        # One step per batch of 10 of the last 40 training ratings, for every user and fold.
        dataset = load_movielens_100k(data_dir / "ml-100k", folds=FOLDS)
        expected_steps = 0
        for fold in FOLDS:
            train = dataset.folds[fold].train_by_user()
            users = sorted(dataset.folds[fold].test_by_user())[:USERS]
            expected_steps += sum(math.ceil(min(40, len(train[u])) / 10) for u in users)
        assert len(steps) == expected_steps
        assert {s.step for s in steps} == {0, 1, 2, 3}
        assert all(s.profile and s.explanation for s in steps)
        # Every chat call the stub served is one stored call, used once by this run.
        assert calls == chat_calls == uses

        # The aggregator's metrics equal the ones computed here from the stored ratings.
        for fold in FOLDS:
            fold_rows = [r for r in rows if r.fold == fold]
            true = np.array([r.true_rating for r in fold_rows], dtype=float)
            pred = np.array([r.rating for r in fold_rows], dtype=float)
            expected = _hand_metrics(true, pred)
            got = aggregate_fold(engine, run_id, fold)
            assert got.n_rated == got.n_expected == len(fold_rows)
            assert got.coverage_pct == 100.0
            assert got.metrics.rmse == pytest.approx(expected["rmse"])
            assert got.metrics.mae == pytest.approx(expected["mae"])
            assert got.metrics.pearson == pytest.approx(expected["pearson"])
            assert got.metrics.exact_match_pct == pytest.approx(expected["exact"])
            assert got.metrics.off_by_one_pct == pytest.approx(expected["off1"])
            assert got.metrics.close_match_pct == pytest.approx(expected["close"])
            assert got.cost_usd > 0
            assert f"{got.metrics.rmse:.3f}" in result.stdout

        # Messages carry ids only: no key, no prompt text, only job ids.
        broker_text = "\n".join(tap.lines)
        sent = tap.job_arguments(queue)
        # Each profile job is sent once; its worker runs the user's rating jobs itself, so
        # a rating job goes through the queue only when it is handed back (none here).
        sent_ids = [args[0] for args in sent]
        profile_ids = {job.id for job in jobs if job.kind == JobKind.PROFILE}
        assert len(sent_ids) == len(set(sent_ids))
        assert profile_ids <= set(sent_ids) <= {job.id for job in jobs}
        assert all(len(args) == 1 for args in sent)
        assert API_KEY not in broker_text
        assert "Toy Story" not in broker_text
        # The key appears in no log line and no database row.
        assert API_KEY not in log_text + result.stdout + result.stderr
        with engine.connect() as conn:
            for table in ("run", "job", "profilestep", "simulatedrating", "llmcall", "calluse"):
                dump = conn.execute(text(f"SELECT * FROM {table}")).all()
                assert API_KEY not in repr(dump), table

        # A rerun of the identical configuration makes zero new calls.
        # Prices are not part of a call's identity: a rerun at another price is free, and its
        # cost estimate uses its own prices.
        rerun_args = [
            *args[:-6],
            "--run-id",
            run_id + "-again",
            "--price-prompt",
            "1.0",
            "--price-completion",
            "1.5",
        ]
        rerun = run_cli(rerun_args, env, tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert stub.chat_count() == chat_calls
        again = aggregate_fold(engine, run_id + "-again", "u1")
        first = aggregate_fold(engine, run_id, "u1")
        assert again.cache_hits == again.calls > 0
        assert again.metrics == first.metrics
        assert first.cost_usd == pytest.approx(
            (first.prompt_tokens * 0.5 + first.completion_tokens * 1.5) / 1e6
        )
        assert again.cost_usd == pytest.approx(
            (again.prompt_tokens * 1.0 + again.completion_tokens * 1.5) / 1e6
        )

        # status and report read the same numbers back from the database.
        status = run_cli(["status", run_id], env, tmp_path)
        assert status.returncode == 0 and "done" in status.stdout
        report = run_cli(["report", run_id], env, tmp_path)
        assert report.returncode == 0
        assert f"{aggregate_fold(engine, run_id, 'u2').metrics.rmse:.3f}" in report.stdout


def test_permanent_llm_error_in_workers_stops_the_run_fast(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"it-{secrets.token_hex(4)}"
    run_id = f"bad-key-{secrets.token_hex(3)}"
    coordinator_env = service_env(database_url, queue, API_KEY)
    worker_env = service_env(database_url, queue, "sk-wrong-key")
    with stub_server(api_key=API_KEY) as stub, celery_workers(worker_env, tmp_path, count=1):
        result = run_cli(
            # Users no other test simulates, so no answer can come from the call cache.
            [
                "run",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--folds",
                "u1",
                "--users",
                "20,21,22",
                "--data-dir",
                str(data_dir),
                "--run-id",
                run_id,
            ],
            coordinator_env,
            tmp_path,
            timeout=240,
        )
    assert result.returncode == ExitCode.STOPPED  # a permanent error stopped the run
    assert "rejected the API key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_key_at_start_fails_before_anything_is_stored(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    run_id = f"preflight-{secrets.token_hex(3)}"
    env = service_env(database_url, f"it-{secrets.token_hex(4)}", "sk-wrong")
    with stub_server(api_key=API_KEY) as stub:
        result = run_cli(
            [
                "run",
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--folds",
                "u1",
                "--max-users",
                "2",
                "--data-dir",
                str(data_dir),
                "--run-id",
                run_id,
            ],
            env,
            tmp_path,
            timeout=240,
        )
        assert stub.chat_count() == 0
    assert result.returncode == 1
    assert "rejected the API key" in result.stderr
    with Session(get_engine(database_url)) as session:
        assert session.exec(select(Job).where(Job.run_id == run_id)).first() is None
