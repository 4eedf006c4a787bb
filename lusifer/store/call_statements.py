"""The statements that record an LLM call: built once, run with parameters.

Recording a call writes up to four things: the call itself (when it is new), its use by a
job, the run's spend, and the job's heartbeat. On PostgreSQL they go as one statement (the
first three as data-modifying CTEs of the use's INSERT): one round trip, atomic without a
transaction around it. SQLite runs the same parts one after the other in a transaction.
Parameters are prefixed by part (``c_``, ``u_``, ``s_``, ``h_``) so the parts never share one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from lusifer.store.tables import CallUse, Job, JobState, LLMCall, Run

_calls = LLMCall.__table__  # type: ignore[attr-defined]
_uses = CallUse.__table__  # type: ignore[attr-defined]
_runs = Run.__table__  # type: ignore[attr-defined]
_jobs = Job.__table__  # type: ignore[attr-defined]

_CALL_COLUMNS = (
    "key",
    "model",
    "request_json",
    "response_text",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "latency_s",
    "cost_usd",
    "created_at",
)
_USE_COLUMNS = ("run_id", "job_id", "call_key", "fold", "cached", "retries")


def _insert(
    dialect: str, table: Any, prefix: str, columns: tuple[str, ...], keys: list[str]
) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values: dict[str, Any] = {name: bindparam(f"{prefix}{name}") for name in columns}
    return insert(table).values(values).on_conflict_do_nothing(index_elements=keys)


@lru_cache(maxsize=16)
def part_statement(dialect: str, part: str) -> Any:
    """One part of recording a call, as a statement of its own."""
    if part == "call":
        return _insert(dialect, _calls, "c_", _CALL_COLUMNS, ["key"])
    if part == "use":
        return _insert(dialect, _uses, "u_", _USE_COLUMNS, ["run_id", "job_id", "call_key"])
    if part == "spend":
        return (
            update(_runs)
            .where(_runs.c.id == bindparam("s_run_id"))
            .values(spent_usd=_runs.c.spent_usd + bindparam("s_cost"))
        )
    if part == "beat":
        return (
            update(_jobs)
            .where(_jobs.c.id == bindparam("h_job_id"), _jobs.c.state == JobState.RUNNING)
            .values(updated_at=bindparam("h_now"))
        )
    raise ValueError(f"unknown part {part!r} of recording a call")


@lru_cache(maxsize=16)
def record_statement(parts: tuple[str, ...]) -> Any:
    """PostgreSQL: the use's INSERT carrying the other ``parts`` as CTEs."""
    statement = part_statement("postgresql", "use")
    for part in parts:
        if part != "use":
            statement = statement.add_cte(part_statement("postgresql", part).cte(f"{part}_cte"))
    return statement
