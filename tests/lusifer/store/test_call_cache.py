"""Every LLM call cached and recorded, against a real SQLite file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, create_engine, select

from lusifer.core.config import LLMConfig
from lusifer.core.errors import BudgetExhausted
from lusifer.llm import ChatRequest, ChatResult, FakeChatModel
from lusifer.store.call_cache import CallContext, RecordedModel, call_cost
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import CallUse, LLMCall, Run
from tests.integration.services import postgres_schema

PRICED = LLMConfig(
    base_url="http://x/v1", model="m", price_prompt_per_mtok=0.15, price_completion_per_mtok=0.6
)
CONTEXT = CallContext(run_id="run-a", job_id="job-1", fold="u1")
REQUEST = ChatRequest(model="m", messages=(("system", "s"), ("user", "Rate item 1.")))

# sha256 of the canonical JSON below, computed once by hand and fixed here: a key that changes
# between versions or processes would make every stored call a cache miss.
KEY_REQUEST = ChatRequest(
    model="gpt-4o-mini",
    messages=(("system", "You rate movies."), ("user", 'Rate <item id="1">Amélie</item>')),
    temperature=0.0,
    max_tokens=28,
    schema_name="ratings",
    json_schema={"type": "object", "required": ["1"]},
)
KEY_CANONICAL = (
    '{"json_schema": {"required": ["1"], "type": "object"}, "max_tokens": 28, '
    '"messages": [["system", "You rate movies."], '
    '["user", "Rate <item id=\\"1\\">Amélie</item>"]], '
    '"model": "gpt-4o-mini", "sample_index": 0, "schema_name": "ratings", '
    '"structured_output": "json_schema", "temperature": 0.0}'
)
KEY_HEX = "282fbdf74b9bace423c6f5064cff9bac3edfe2c62cdc9558c465ca2fb59963ae"


class FixedModel:
    """Answers with fixed token counts and latency, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: ChatRequest) -> ChatResult:
        self.calls += 1
        return ChatResult(
            text='{"1": 4}',
            prompt_tokens=1200,
            completion_tokens=300,
            cached_tokens=100,
            latency_s=0.5,
            retries=2,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    # PostgreSQL records a call in one statement (CTEs), SQLite in a transaction: both count.
    if request.param == "sqlite":
        engine = get_engine(f"sqlite:///{tmp_path / 'calls.db'}")
        create_tables(engine)
        yield engine
        return
    with postgres_schema("lusifer_calls") as url:
        engine = get_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


def _uses(engine: Engine) -> list[CallUse]:
    with Session(engine) as session:
        return list(session.exec(select(CallUse).order_by(CallUse.run_id)).all())


def test_call_cost_by_hand() -> None:
    # (1200 * 0.15 + 300 * 0.6) / 1e6 = (180 + 180) / 1e6
    assert call_cost(PRICED, 1200, 300) == pytest.approx(3.6e-4)
    assert call_cost(PRICED, 0, 0) == 0.0


def test_first_call_is_stored_with_tokens_latency_and_cost(engine: Engine) -> None:
    model = FixedModel()
    recorded = RecordedModel(engine, model, PRICED, CONTEXT)
    result = recorded.complete(REQUEST)
    assert result.text == '{"1": 4}'
    assert model.calls == 1
    assert (recorded.new_calls, recorded.cache_hits) == (1, 0)

    with Session(engine) as session:
        row = session.get(LLMCall, REQUEST.cache_key())
    assert row is not None
    assert row.model == "m"
    assert row.response_text == '{"1": 4}'
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (1200, 300, 100)
    assert row.latency_s == pytest.approx(0.5)
    assert row.cost_usd == pytest.approx(3.6e-4)
    assert json.loads(row.request_json)["messages"] == [["system", "s"], ["user", "Rate item 1."]]

    [use] = _uses(engine)
    assert (use.run_id, use.job_id, use.fold, use.call_key) == (
        "run-a",
        "job-1",
        "u1",
        REQUEST.cache_key(),
    )
    assert use.cached is False
    assert use.retries == 2


def test_identical_request_is_answered_from_the_cache(engine: Engine) -> None:
    fake = FakeChatModel(lambda r: '{"1": 3}')
    first = RecordedModel(engine, fake, PRICED, CONTEXT)
    original = first.complete(REQUEST)
    assert len(fake.requests) == 1

    # The same job asking again, and another run (a rerun) asking the same thing.
    again = first.complete(REQUEST)
    rerun = RecordedModel(engine, fake, PRICED, CallContext("run-b", "job-1", "u1"))
    cached = rerun.complete(REQUEST)
    assert len(fake.requests) == 1
    assert (first.new_calls, first.cache_hits) == (1, 1)
    assert (rerun.new_calls, rerun.cache_hits) == (0, 1)
    for hit in (again, cached):
        assert hit.text == original.text
        assert hit.prompt_tokens == original.prompt_tokens
        assert hit.completion_tokens == original.completion_tokens
        assert hit.latency_s == 0.0

    with Session(engine) as session:
        assert len(session.exec(select(LLMCall)).all()) == 1
    uses = _uses(engine)
    assert [(u.run_id, u.cached) for u in uses] == [("run-a", False), ("run-b", True)]


def test_cache_survives_a_new_engine_on_the_same_file(tmp_path: Path, engine: Engine) -> None:
    fake = FakeChatModel(lambda r: "answer")
    RecordedModel(engine, fake, PRICED, CONTEXT).complete(REQUEST)
    engine.dispose()
    fresh = create_engine(engine.url)  # not the cached engine
    other = FakeChatModel(lambda r: "other answer")
    assert RecordedModel(fresh, other, PRICED, CONTEXT).complete(REQUEST).text == "answer"
    assert other.requests == []


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.7}, {"sample_index": 1}, {"model": "m2"}, {"max_tokens": 10}],
)
def test_a_different_parameter_is_a_different_call(
    engine: Engine, change: dict[str, object]
) -> None:
    fake = FakeChatModel(lambda r: f"answer {len(fake.requests)}")
    recorded = RecordedModel(engine, fake, PRICED, CONTEXT)
    other = REQUEST.model_copy(update=change)
    assert other.cache_key() != REQUEST.cache_key()
    assert recorded.complete(REQUEST).text == "answer 1"
    assert recorded.complete(other).text == "answer 2"
    assert len(fake.requests) == 2
    with Session(engine) as session:
        assert len(session.exec(select(LLMCall)).all()) == 2


def test_cache_key_is_the_sha256_of_the_canonical_json() -> None:
    assert hashlib.sha256(KEY_CANONICAL.encode()).hexdigest() == KEY_HEX
    assert KEY_REQUEST.cache_key() == KEY_HEX


def test_cache_key_ignores_dict_order_but_not_message_order() -> None:
    reordered = KEY_REQUEST.model_copy(
        update={"json_schema": {"required": ["1"], "type": "object"}}
    )
    assert reordered.cache_key() == KEY_HEX
    swapped = KEY_REQUEST.model_copy(update={"messages": tuple(reversed(KEY_REQUEST.messages))})
    assert swapped.cache_key() != KEY_HEX


def test_new_calls_add_to_the_run_spend_until_its_cap_stops_them(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(
            Run(
                id=CONTEXT.run_id,
                config_json="{}",
                prompt_set="p",
                prompt_version="1",
                prompt_hash="h",
                prompts_json="{}",
                dataset_fingerprint="f",
                max_cost_usd=0.0005,
            )
        )
        session.commit()
    recorded = RecordedModel(engine, FixedModel(), PRICED, CONTEXT)
    recorded.complete(REQUEST)  # 1200 x 0.15 + 300 x 0.6 per million: $0.00036
    with Session(engine) as session:
        run = session.get(Run, CONTEXT.run_id)
        assert run is not None and run.spent_usd == pytest.approx(0.00036)
    recorded.complete(REQUEST.model_copy(update={"sample_index": 1}))  # $0.00072: over
    with pytest.raises(BudgetExhausted):
        recorded.complete(REQUEST.model_copy(update={"sample_index": 2}))
    assert recorded.complete(REQUEST).text == '{"1": 4}'  # a cached answer costs nothing
