"""An environment step sent to the workers is a job like any other: a step whose message no
worker takes is sent again a bounded number of times, then fails naming the queue."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from sqlmodel import Session

from lusifer.core.config import LLMConfig
from lusifer.core.settings import Settings
from lusifer.env.executors import MAX_SENDS, CeleryExecutor
from lusifer.env.simulator import Simulator
from lusifer.env.store import create_episode
from lusifer.llm import FakeChatModel
from lusifer.queue import make_celery
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import EnvStepRequest, JobState
from tests.integration.services import REDIS_DB
from tests.lusifer.env.conftest import env_config, fake_answer, tiny_dataset

pytestmark = pytest.mark.integration
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"


def test_a_step_nobody_takes_is_sent_again_then_fails_naming_the_queue(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'env.db'}")
    create_tables(engine)
    config = env_config(llm=LLMConfig(base_url="http://127.0.0.1:9/v1", model="stub-model"))
    sim = Simulator(tiny_dataset(), config, engine=engine, model=FakeChatModel(fake_answer))
    rid = create_episode(engine, "lonely", sim.spec_id, 1, sim.catalog.histories[1])
    queue = f"nobody-{secrets.token_hex(4)}"  # no worker consumes it
    app = make_celery(Settings(broker_url=BROKER, queue=queue))
    executor = CeleryExecutor(engine, app, queue, timeout_s=30, resend_after_s=0.3)
    started = time.monotonic()
    executor.run([rid])  # ends: the step failed, it is not waited for until the timeout
    assert time.monotonic() - started < 10
    with Session(engine) as session:
        row = session.get(EnvStepRequest, rid)
    assert row is not None and row.state == JobState.FAILED
    assert row.error is not None and f"sent {MAX_SENDS} times" in row.error and queue in row.error
    with app.connection_for_write() as conn:  # the messages sent, left for nobody
        conn.default_channel.client.delete(queue)
