"""Cost control against the stub: `--dry-run` estimates without calling or writing anything,
`--max-cost` stops a run at its cap and `resume --max-cost HIGHER` finishes it."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect
from sqlmodel import Session, func, select

from lusifer.core.errors import ExitCode
from lusifer.store.engines import get_engine
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, Run
from tests.integration.services import (
    celery_workers,
    postgres_schema,
    run_cli,
    service_env,
    stub_run_args,
    stub_server,
)

pytestmark = pytest.mark.integration

THREADS = 4
# The dry run assumes 400-character profiles where the stub writes ~110; its prompt tokens
# come out within this share of the real ones (measured: about +5 %).
PROMPT_TOLERANCE = 0.15
ESTIMATE = re.compile(
    r"estimate: (\d+) calls, (\d+) prompt tokens, (\d+) completion tokens, \$([0-9.]+)"
)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def _states_once_settled(engine: Engine, run_id: str) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        with Session(engine) as session:
            states = list(session.exec(select(Job.state).where(Job.run_id == run_id)).all())
        if JobState.RUNNING not in states or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_dry_run_then_a_capped_run_then_resume(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    queue = f"it-{secrets.token_hex(4)}"
    env = service_env(database_url, queue, None)
    run_id = f"cost-{secrets.token_hex(3)}"
    engine = get_engine(database_url)
    with stub_server("--latency", "0.1") as stub, celery_workers(env, tmp_path, 1, THREADS) as w:
        prices = ["--price-prompt", "2.0", "--price-completion", "8.0"]
        args = stub_run_args(
            stub.base_url, data_dir, run_id, "--folds", "u1", "--max-users", "6", *prices
        )
        dry = run_cli([*args, "--dry-run"], env, tmp_path)
        assert dry.returncode == 0, dry.stderr + dry.stdout
        # Nothing called (not even the model list) and nothing written (not even tables).
        assert stub.requests() == []
        assert inspect(engine).get_table_names() == []
        found = ESTIMATE.search(dry.stdout)
        assert found, dry.stdout
        est_calls, est_prompt, _est_completion = (int(found.group(i)) for i in (1, 2, 3))
        est_cost = float(found.group(4))
        assert est_cost > 0

        cap = est_cost / 3
        capped = run_cli([*args, "--max-cost", f"{cap:.6f}"], env, tmp_path)
        assert capped.returncode == ExitCode.COST_CAP, capped.stdout + w.log_text()[-3000:]
        message = capped.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "cost cap" in message and f"lusifer resume {run_id} --max-cost" in message
        # A job handed on just before the stop is handed back by the worker at its first call.
        states = _states_once_settled(engine, run_id)
        with Session(engine) as session:
            run = session.get(Run, run_id)
            assert run is not None and run.status == "capped"
            spent = run.spent_usd
            costliest = session.exec(select(func.max(LLMCall.cost_usd))).one()
        # It stopped at the cap: over it by at most the calls that were in flight.
        assert cap <= spent <= cap + THREADS * costliest
        assert JobState.PENDING in states and JobState.DONE in states
        calls_before = stub.chat_count()

        resumed = run_cli(["resume", run_id, "--max-cost", "100"], env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        chat_calls = stub.chat_count()
    assert chat_calls > calls_before
    with Session(engine) as session:
        states = session.exec(select(Job.state).where(Job.run_id == run_id)).all()
        stored = session.exec(select(func.count()).select_from(LLMCall)).one()
        real_prompt = session.exec(select(func.sum(LLMCall.prompt_tokens))).one()
        cached_tokens = session.exec(select(func.sum(LLMCall.cached_tokens))).one()
        new_uses = session.exec(
            select(func.count()).where(CallUse.run_id == run_id, CallUse.cached == False)  # noqa: E712
        ).one()
        run = session.get(Run, run_id)
        assert run is not None and run.status == "done"
        paid = session.exec(select(func.sum(LLMCall.cost_usd))).one()
    assert set(states) == {JobState.DONE}
    # No call was paid twice across the stop and the resume, and the spend is their cost.
    assert stored == chat_calls == new_uses
    assert run.spent_usd == pytest.approx(paid)
    # The dry run's estimate of the same run: the same calls (the stub never needs a re-ask),
    # and prompt tokens within the stated tolerance.
    print(f"dry run: {est_calls} calls, {est_prompt} prompt tokens; real: {real_prompt}")
    assert est_calls == chat_calls
    assert abs(est_prompt - real_prompt) <= PROMPT_TOLERANCE * real_prompt
    # Every profile prompt starts with the same instructions: the stub's prefix cache serves
    # them, the calls record it and the report shows it.
    assert 0 < cached_tokens < real_prompt
    assert "cached tok" in resumed.stdout
