"""The audit of a run against a stub request log, on hand-made rows and log entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from lusifer.llm import ChatRequest, request_body
from lusifer.store.engines import create_tables, get_engine, session_scope, upsert
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, SimulatedRating
from lusifer.stub.api import body_sha256
from lusifer.stub.audit import audit_run
from lusifer.stub.state import CHAT_PATH

RECORDED_AT = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def _request(text: str) -> ChatRequest:
    return ChatRequest(model="m", messages=(("user", text),))


def _engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    create_tables(engine)
    with session_scope(engine) as session:
        upsert(
            session,
            Job,
            [
                {
                    "id": f"r/u1/1/rating/{i}",
                    "run_id": "r",
                    "fold": "u1",
                    "user_id": 1,
                    "kind": "rating",
                    "chunk": i,
                    "state": state,
                    "reasks": reasks,
                    "inputs_json": "{}",
                }
                for i, (state, reasks) in enumerate([(JobState.DONE, 2), (JobState.FAILED, 0)])
            ],
            keys=["id"],
        )
        upsert(
            session,
            SimulatedRating,
            [
                {
                    "run_id": "r",
                    "fold": "u1",
                    "user_id": 1,
                    "item_id": item,
                    "true_rating": 3,
                    "job_id": "r/u1/1/rating/0",
                    "rating": rating,
                }
                for item, rating in ((10, 4), (11, None))
            ],
            keys=["run_id", "fold", "user_id", "item_id"],
        )
        request = _request("rate item 10")
        upsert(
            session,
            LLMCall,
            [
                {
                    "key": request.cache_key(),
                    "model": "m",
                    "response_text": "{}",
                    "request_json": json.dumps(request.model_dump(mode="json")),
                    "created_at": datetime.fromtimestamp(RECORDED_AT, UTC),
                }
            ],
            keys=["key"],
        )
        upsert(
            session,
            CallUse,
            [
                {
                    "run_id": "r",
                    "job_id": "r/u1/1/rating/0",
                    "call_key": request.cache_key(),
                    "fold": "u1",
                }
            ],
            keys=["run_id", "job_id", "call_key"],
        )
    return engine


def _entry(
    request: ChatRequest, ts: float, status: int | None, **extra: object
) -> dict[str, object]:
    body = json.dumps(request_body(request)).encode()
    entry = {
        "path": CHAT_PATH,
        "body_sha256": body_sha256(body),
        "status": status,
        "ts": ts,
        "fault": None,
        "delivered": True,
    }
    return {**entry, **extra}


def test_requests_are_matched_to_recorded_calls_and_repeats_counted(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    recorded, unknown = _request("rate item 10"), _request("something else")
    log = [
        _entry(recorded, RECORDED_AT - 3, 503, fault="503", delivered=True),
        # Answered while the worker was gone: the answer never arrived.
        _entry(recorded, RECORDED_AT - 2, 200, delivered=False),
        _entry(recorded, RECORDED_AT - 1, 200),
        _entry(recorded, RECORDED_AT + 5, 200),  # sent although the call was recorded
        _entry(unknown, RECORDED_AT, None, fault="reset"),
        {"path": "/v1/models", "body_sha256": None, "status": 200, "ts": 0, "fault": None},
    ]
    audit = audit_run(engine, "r", log)
    assert audit.faults == {"503": 1, "reset": 1}
    assert (audit.jobs, audit.jobs_failed, audit.reasks) == (2, 1, 2)
    assert (audit.chat_requests, audit.calls, audit.retries) == (5, 1, 3)
    assert (audit.expected_ratings, audit.lost_results, audit.duplicated_results) == (2, 1, 0)
    assert audit.answered_twice == 1  # two delivered 200 answers to one body
    assert audit.repeated_successful_calls == 1
    assert audit.unmatched_requests == 1
