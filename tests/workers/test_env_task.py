"""The environment step task: done, handed back to the queue on transient LLM errors, failed
with its kind on permanent ones or once retries run out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery.app.task import Context
from sqlalchemy import Engine
from sqlmodel import Session

from lusifer.core.config import LLMConfig
from lusifer.core.settings import get_settings
from lusifer.env.simulator import Simulator
from lusifer.env.store import create_episode
from lusifer.llm import FakeChatModel
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import EnvStepRequest
from lusifer.stub import StubConfig, StubServer
from tests.lusifer.env.conftest import env_config, fake_answer, tiny_dataset
from workers.tasks import run_env_request


class _Retry(Exception):
    pass


class FakeTask:
    """Just what the task function uses of a bound Celery task."""

    def __init__(self, retries: int) -> None:
        self.request = Context(retries=retries)  # Celery's own: custom headers via .get
        self.retried: list[dict[str, Any]] = []

    def retry(self, **kwargs: Any) -> _Retry:
        self.retried.append(kwargs)
        return _Retry()


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    monkeypatch.setenv("LUSIFER_DATABASE_URL", url)
    monkeypatch.setenv("LUSIFER_LLM_ATTEMPTS", "1")
    monkeypatch.setenv("LUSIFER_JOB_MAX_RETRIES", "2")
    monkeypatch.delenv("LUSIFER_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    get_settings.cache_clear()
    engine = get_engine(url)
    create_tables(engine)
    return engine


def _reset_request(engine: Engine, base_url: str, name: str) -> str:
    config = env_config(llm=LLMConfig(base_url=base_url, model="stub-model"))
    sim = Simulator(tiny_dataset(), config, engine=engine, model=FakeChatModel(fake_answer))
    return create_episode(engine, name, sim.spec_id, 1, sim.catalog.histories[1])


def _row(engine: Engine, rid: str) -> EnvStepRequest:
    with Session(engine) as session:
        row = session.get(EnvStepRequest, rid)
    assert row is not None
    return row


def test_a_request_is_done_by_the_task(engine: Engine) -> None:
    with StubServer(StubConfig()) as stub:
        rid = _reset_request(engine, stub.base_url, "ok")
        assert run_env_request(FakeTask(0), rid) == "done"  # type: ignore[arg-type]
    assert _row(engine, rid).state == "done"


def test_transient_errors_go_back_to_the_queue_then_fail(engine: Engine) -> None:
    with StubServer(StubConfig(fault_rate=1.0, faults=["500"])) as stub:
        rid = _reset_request(engine, stub.base_url, "flaky")
        task = FakeTask(0)
        with pytest.raises(_Retry):
            run_env_request(task, rid)  # type: ignore[arg-type]
        assert task.retried and task.retried[0]["max_retries"] == 3
        assert _row(engine, rid).state == "running"
        assert run_env_request(FakeTask(2), rid) == "failed"  # type: ignore[arg-type]
    row = _row(engine, rid)
    assert row.state == "failed" and row.error_kind == "transient"


def test_a_permanent_error_fails_at_once(engine: Engine) -> None:
    with StubServer(StubConfig(api_key="sk-right")) as stub:
        rid = _reset_request(engine, stub.base_url, "denied")
        assert run_env_request(FakeTask(0), rid) == "failed"  # type: ignore[arg-type]
    row = _row(engine, rid)
    assert row.error_kind == "permanent" and "key" in (row.error or "")


def test_an_unexpected_error_fails_the_step_naming_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: Any, **__: Any) -> str:
        raise KeyError("a bug nobody anticipated")

    with StubServer(StubConfig()) as stub:
        rid = _reset_request(engine, stub.base_url, "bug")
        monkeypatch.setattr("lusifer.env.dynamics.execute_env_request", explode)
        assert run_env_request(FakeTask(0), rid) == "failed"  # type: ignore[arg-type]
    row = _row(engine, rid)
    assert row.state == "failed"
    assert row.error is not None and "unexpected KeyError" in row.error


def test_a_database_away_keeps_the_message(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    def refused(*_: Any, **__: Any) -> None:
        raise OperationalError("UPDATE", None, ConnectionRefusedError("database is down"))

    with StubServer(StubConfig()) as stub:
        rid = _reset_request(engine, stub.base_url, "dbdown")
        monkeypatch.setattr("lusifer.env.store.set_state", refused)
        task = FakeTask(0)
        with pytest.raises(_Retry):
            run_env_request(task, rid)  # type: ignore[arg-type]
    # Retried without a cap of Celery's: the outage, not a count, decides when it runs.
    assert task.retried[0]["max_retries"] is None and task.retried[0]["countdown"] > 0
