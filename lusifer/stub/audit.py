"""Auditing a run against the stub's request log: what was injected, sent, answered, repeated.

The figures are measured, not assumed: requests, faults and answers come from the stub's log;
jobs, results and recorded calls from the database. A request is matched to the call it made
by the hash of its JSON body: ``lusifer.llm.request.request_body`` rebuilds the body of every
call the run recorded, and the stub hashes what it received the same way.

- *retries*: requests that sent a body already sent before (after a 429, 5xx, timeout, reset,
  or a job retried after one);
- *re-asks*: follow-up questions after an invalid or incomplete answer (a new body: the
  conversation grows), as the jobs recorded them;
- *answered twice*: bodies the stub answered with 200 more than once and whose answers reached
  the client, e.g. a worker killed after the answer arrived but before it was recorded;
- *repeated successful calls*: requests sent for a call that had already been recorded (the
  call cache should have answered them): the figure that must stay 0.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from lusifer.llm import ChatRequest, request_body
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, ProfileStep, SimulatedRating
from lusifer.stub.api import body_sha256
from lusifer.stub.state import CHAT_PATH


@dataclass(frozen=True)
class RunAudit:
    """What happened to one run's LLM calls and results."""

    faults: dict[str, int]
    jobs: int
    jobs_failed: int
    chat_requests: int
    calls: int
    retries: int
    reasks: int
    expected_ratings: int
    lost_results: int
    duplicated_results: int
    answered_twice: int
    repeated_successful_calls: int
    unmatched_requests: int


def request_hash(request_json: str) -> str:
    """The stub's body hash of the HTTP request a recorded call sent."""
    request = ChatRequest.model_validate_json(request_json)
    digest = body_sha256(json.dumps(request_body(request)).encode())
    assert digest is not None  # a body is never empty
    return digest


def _recorded_at(engine: Engine, run_id: str) -> dict[str, float]:
    """Body hash -> when the run's call with that body was recorded (epoch seconds)."""
    with Session(engine) as session:
        rows = session.exec(
            select(LLMCall.request_json, LLMCall.created_at)
            .join(CallUse, col(CallUse.call_key) == col(LLMCall.key))
            .where(CallUse.run_id == run_id)
            .distinct()
        ).all()
    # SQLite hands back naive datetimes; they were written in UTC.
    return {
        request_hash(request_json): (
            created if created.tzinfo else created.replace(tzinfo=UTC)
        ).timestamp()
        for request_json, created in rows
    }


def _result_counts(engine: Engine, run_id: str) -> tuple[int, int, int]:
    """Expected ratings, ratings still missing, and rows beyond one per result key."""
    with Session(engine) as session:
        expected = session.exec(select(func.count()).where(SimulatedRating.run_id == run_id)).one()
        missing = session.exec(
            select(func.count()).where(
                SimulatedRating.run_id == run_id, col(SimulatedRating.rating).is_(None)
            )
        ).one()
        ratings = session.exec(
            select(SimulatedRating.fold, SimulatedRating.user_id, SimulatedRating.item_id).where(
                SimulatedRating.run_id == run_id
            )
        ).all()
        steps = session.exec(
            select(ProfileStep.fold, ProfileStep.user_id, ProfileStep.step).where(
                ProfileStep.run_id == run_id
            )
        ).all()
    duplicated = (len(ratings) - len(set(ratings))) + (len(steps) - len(set(steps)))
    return int(expected), int(missing), duplicated


def audit_run(engine: Engine, run_id: str, log: Sequence[dict[str, Any]]) -> RunAudit:
    """Audit ``run_id`` against a stub request log holding this run's requests only."""
    chats = [entry for entry in log if entry["path"] == CHAT_PATH]
    recorded = _recorded_at(engine, run_id)
    sent = Counter(entry["body_sha256"] for entry in chats)
    delivered = Counter(
        entry["body_sha256"]
        for entry in chats
        if entry["status"] == 200 and entry.get("delivered") is not False
    )
    repeated = sum(
        1
        for entry in chats
        if entry["body_sha256"] in recorded and entry["ts"] > recorded[entry["body_sha256"]]
    )
    with Session(engine) as session:
        jobs = session.exec(select(Job.state, Job.reasks).where(Job.run_id == run_id)).all()
    expected, missing, duplicated = _result_counts(engine, run_id)
    return RunAudit(
        faults=dict(Counter(str(entry["fault"]) for entry in chats if entry["fault"])),
        jobs=len(jobs),
        jobs_failed=sum(1 for state, _ in jobs if state == JobState.FAILED),
        chat_requests=len(chats),
        calls=len(recorded),
        retries=sum(n - 1 for n in sent.values()),
        reasks=sum(reasks for _, reasks in jobs),
        expected_ratings=expected,
        lost_results=missing,
        duplicated_results=duplicated,
        answered_twice=sum(n - 1 for n in delivered.values() if n > 1),
        repeated_successful_calls=repeated,
        unmatched_requests=sum(n for body, n in sent.items() if body not in recorded),
    )
