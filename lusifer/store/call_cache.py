"""Every LLM call cached and recorded: a finished call is committed before it is used.

A call's content-addressed key is looked up first; a hit costs nothing and is recorded as a
cache use, so resuming or rerunning a run repeats no call that already succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, select

from lusifer.core.config import LLMConfig
from lusifer.core.errors import BudgetExhausted
from lusifer.core.settings import get_settings
from lusifer.llm import ChatModel, ChatRequest, ChatResult, key_of
from lusifer.store.call_statements import part_statement, record_statement
from lusifer.store.engines import autocommit
from lusifer.store.tables import Job, LLMCall, Run, utcnow


@dataclass(frozen=True)
class CallContext:
    """Whose call it is, for accounting."""

    run_id: str
    job_id: str
    fold: str


def call_cost(config: LLMConfig, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated cost in USD of a call at the configured prices."""
    return (
        prompt_tokens * config.price_prompt_per_mtok
        + completion_tokens * config.price_completion_per_mtok
    ) / 1_000_000


# Built once, run with parameters: assembling statements from ORM attributes on every call
# cost more CPU than the database spent running them.
_calls, _jobs = LLMCall.__table__, Job.__table__  # type: ignore[attr-defined]
_runs = Run.__table__  # type: ignore[attr-defined]
# Two columns, not the run row.
_BUDGET = select(_runs.c.spent_usd, _runs.c.max_cost_usd).where(_runs.c.id == bindparam("run_id"))


def _scalar(column: Any, where: Any) -> Any:
    return select(column).where(where).scalar_subquery().label(column.name)


# The cached answer and the run's budget in one round trip (this runs before every call), as
# scalar subqueries: a row comes back whether or not the call or the run exists.
_by_key = _calls.c.key == bindparam("key")
_by_run = _runs.c.id == bindparam("run_id")
ANSWER_AND_BUDGET = select(
    _scalar(_runs.c.spent_usd, _by_run),
    _scalar(_runs.c.max_cost_usd, _by_run),
    _scalar(_calls.c.response_text, _by_key),
    _scalar(_calls.c.prompt_tokens, _by_key),
    _scalar(_calls.c.completion_tokens, _by_key),
    _scalar(_calls.c.cached_tokens, _by_key),
)
# A job making calls renews its lease at most this often (and at least four times a lease):
# a heartbeat statement on every call cost more than the call's own bookkeeping.
HEARTBEAT_EVERY_S = 10.0


def _check_spend(run_id: str, spent: float, cap: float | None) -> None:
    if cap is not None and spent >= cap:
        raise BudgetExhausted(f"run {run_id} spent ${spent:.4f} of its ${cap:.4f} cap")


# Held around each call (lookup, budget check, call, record): a worker's cap on calls in flight.
CallGate = Callable[[ChatRequest], AbstractContextManager[None]]


class CallBook:
    """The bookkeeping of a job's calls, whoever does the I/O (blocking or asyncio).

    For each request: the parameters of the cache lookup, the answer a lookup row holds (or
    the budget check when it holds none), and the parameters of recording the call's use.
    """

    def __init__(self, config: LLMConfig, context: CallContext) -> None:
        self.config = config
        self.context = context
        self.new_calls = 0
        self.cache_hits = 0
        # The job was claimed (its lease renewed) just before it was handed here.
        self._last_beat = time.monotonic()
        self._beat_every_s = min(HEARTBEAT_EVERY_S, get_settings().job_lease_s / 4)

    def lookup(self, request: ChatRequest) -> tuple[str, str, dict[str, Any]]:
        """The request's canonical JSON, its key, and the parameters of ``ANSWER_AND_BUDGET``."""
        canonical = request.canonical_json()
        key = key_of(canonical)
        return canonical, key, {"key": key, "run_id": self.context.run_id}

    def cached(self, row: Mapping[Any, Any]) -> ChatResult | None:
        """The cached answer of a lookup row; None when there is none and the budget allows."""
        if row["response_text"] is not None:
            self.cache_hits += 1
            return ChatResult(
                text=row["response_text"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                cached_tokens=row["cached_tokens"],
                latency_s=0.0,
            )
        if row["spent_usd"] is not None:
            _check_spend(self.context.run_id, row["spent_usd"], row["max_cost_usd"])
        return None

    def hit(self, key: str) -> tuple[tuple[str, ...], dict[str, Any]]:
        """What recording a cache hit writes: the parts present and their parameters."""
        return self._parts(key, None, None, cached=True, retries=0)

    def new_call(
        self, request: ChatRequest, canonical: str, key: str, result: ChatResult
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """What recording a new call writes: the call, its use, the spend, maybe a heartbeat."""
        self.new_calls += 1
        # A Batch API answer costs the discounted price.
        cost = result.price_factor * call_cost(
            self.config, result.prompt_tokens, result.completion_tokens
        )
        call = {
            "c_key": key,
            "c_model": request.model,
            "c_request_json": canonical,
            "c_response_text": result.text,
            "c_prompt_tokens": result.prompt_tokens,
            "c_completion_tokens": result.completion_tokens,
            "c_cached_tokens": result.cached_tokens,
            "c_latency_s": result.latency_s,
            "c_cost_usd": cost,
            "c_created_at": utcnow(),
        }
        # In the call's own statement: the spend the cost cap is checked against.
        spend = {"s_run_id": self.context.run_id, "s_cost": cost} if cost > 0 else None
        return self._parts(key, call, spend, cached=False, retries=result.retries)

    def _parts(
        self,
        key: str,
        call: dict[str, Any] | None,
        spend: dict[str, Any] | None,
        *,
        cached: bool,
        retries: int,
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        # The use is also the job's heartbeat: a job making calls holds its lease.
        now = time.monotonic()
        beat = None
        if now - self._last_beat >= self._beat_every_s:
            beat = {"h_job_id": self.context.job_id, "h_now": utcnow()}
            self._last_beat = now
        use = {
            "u_run_id": self.context.run_id,
            "u_job_id": self.context.job_id,
            "u_call_key": key,
            "u_fold": self.context.fold,
            "u_cached": cached,
            "u_retries": retries,
        }
        parts = [("call", call), ("spend", spend), ("beat", beat), ("use", use)]
        present = tuple(name for name, values in parts if values is not None)
        params = {k: v for _, values in parts if values is not None for k, v in values.items()}
        return present, params


class RecordedModel:
    """A ``ChatModel`` that answers from the call cache when it can and records every call."""

    def __init__(
        self,
        engine: Engine,
        model: ChatModel,
        config: LLMConfig,
        context: CallContext,
        gate: CallGate | None = None,
    ) -> None:
        self._engine = engine
        self._gate = gate
        self._model = model
        self.book = CallBook(config, context)

    @property
    def new_calls(self) -> int:
        """Calls this model paid for (not answered from the cache)."""
        return self.book.new_calls

    @property
    def cache_hits(self) -> int:
        """Calls answered from the cache."""
        return self.book.cache_hits

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer from the cache, or call the model and commit the call at once."""
        if self._gate is None:
            return self._complete(request)
        # The budget is checked inside the gate: a call waiting for a slot must not start
        # on a budget read before it waited.
        with self._gate(request):
            return self._complete(request)

    def _complete(self, request: ChatRequest) -> ChatResult:
        canonical, key, lookup = self.book.lookup(request)
        with autocommit(self._engine).connect() as conn:
            row = conn.execute(ANSWER_AND_BUDGET, lookup).first()
        assert row is not None  # scalar subqueries: always one row
        cached = self.book.cached(row._mapping)
        if cached is not None:
            self._record(*self.book.hit(key))
            return cached
        result = self._model.complete(request)
        # The call and its use together, committed before the answer is used.
        self._record(*self.book.new_call(request, canonical, key, result))
        return result

    def _record(self, present: tuple[str, ...], params: dict[str, Any]) -> None:
        """Store a call (when new), its use, the run's spend and the job's heartbeat at once."""
        if self._engine.dialect.name == "postgresql":
            # One statement, the others as data-modifying CTEs: one round trip, atomic.
            with autocommit(self._engine).connect() as conn:
                conn.execute(record_statement(present), params)
            return
        with self._engine.begin() as conn:
            for name in present:
                conn.execute(part_statement(self._engine.dialect.name, name), params)
