"""Batch submissions and their lines in the database: what was sent, what came back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from lusifer.batchapi.client import BatchInfo
from lusifer.batchapi.deferred import PendingCall
from lusifer.batchapi.lines import LineAnswer, LineError
from lusifer.store.engines import session_scope, upsert
from lusifer.store.tables import BatchLineOutcome, LLMBatch, LLMBatchLine, utcnow


def next_round(engine: Engine, run_id: str) -> int:
    """The number of the next round of a run (0 for the first)."""
    with Session(engine) as session:
        last = session.exec(select(func.max(LLMBatch.round)).where(LLMBatch.run_id == run_id)).one()
    return 0 if last is None else int(last) + 1


def record_submission(
    engine: Engine,
    run_id: str,
    info: BatchInfo,
    round_: int,
    part: int,
    calls: Sequence[PendingCall],
) -> None:
    """Store an accepted batch and its lines in one transaction."""
    with session_scope(engine) as session:
        upsert(
            session,
            LLMBatch,
            [
                {
                    "id": info.id,
                    "run_id": run_id,
                    "round": round_,
                    "part": part,
                    "input_file_id": info.input_file_id,
                    "status": info.status,
                    "line_count": len(calls),
                }
            ],
            keys=["id"],
        )
        upsert(
            session,
            LLMBatchLine,
            [
                {
                    "batch_id": info.id,
                    "call_key": call.request.cache_key(),
                    "run_id": run_id,
                    "job_id": call.job_id,
                    "request_json": json.dumps(call.request.model_dump(mode="json")),
                }
                for call in calls
            ],
            keys=["batch_id", "call_key"],
        )


def open_batches(engine: Engine, run_id: str) -> list[LLMBatch]:
    """Submitted batches of a run whose results are not read yet, oldest first."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(LLMBatch)
                .where(LLMBatch.run_id == run_id, col(LLMBatch.collected).is_(False))
                .order_by(col(LLMBatch.round), col(LLMBatch.part))
            ).all()
        )


def record_status(engine: Engine, info: BatchInfo) -> None:
    """Keep the provider's latest word on a batch."""
    with session_scope(engine) as session:
        session.execute(
            update(LLMBatch)
            .where(col(LLMBatch.id) == info.id)
            .values(
                status=info.status,
                output_file_id=info.output_file_id,
                error_file_id=info.error_file_id,
                updated_at=utcnow(),
            )
        )


def record_results(
    engine: Engine, info: BatchInfo, results: Iterable[LineAnswer | LineError]
) -> tuple[int, int]:
    """Store the answers and errors of a finished batch, and mark it collected.

    Lines the batch never answered (it expired, was cancelled or failed) become transient
    errors, so they go into the next round. Returns (answered, failed).
    """
    answered = failed = 0
    batch_error = "; ".join(info.errors)[:500] or f"the batch ended {info.status}"
    with session_scope(engine) as session:
        line = col(LLMBatchLine.batch_id) == info.id
        for result in results:
            this = line & (col(LLMBatchLine.call_key) == result.custom_id)
            if isinstance(result, LineAnswer):
                answered += 1
                values: dict[str, object] = {
                    "outcome": BatchLineOutcome.ANSWERED,
                    "status_code": 200,
                    "response_text": result.result.text,
                    "prompt_tokens": result.result.prompt_tokens,
                    "completion_tokens": result.result.completion_tokens,
                    "cached_tokens": result.result.cached_tokens,
                }
            else:
                failed += 1
                values = {
                    "outcome": BatchLineOutcome.TRANSIENT
                    if result.transient
                    else BatchLineOutcome.PERMANENT,
                    "status_code": result.status_code,
                    "error": result.message,
                }
            session.execute(update(LLMBatchLine).where(this).values(**values))
        # A batch that failed validation will fail the same way again: its lines are refused.
        # One that expired, was cancelled or hit the queue's token limit is tried again.
        leftover = BatchLineOutcome.PERMANENT if info.refused else BatchLineOutcome.TRANSIENT
        unanswered = session.execute(
            update(LLMBatchLine)
            .where(line, col(LLMBatchLine.outcome) == BatchLineOutcome.AWAITING)
            .values(outcome=leftover, error=batch_error)
        )
        failed += int(unanswered.rowcount)  # type: ignore[attr-defined]
        session.execute(
            update(LLMBatch)
            .where(col(LLMBatch.id) == info.id)
            .values(
                status=info.status,
                collected=True,
                output_file_id=info.output_file_id,
                error_file_id=info.error_file_id,
                updated_at=utcnow(),
            )
        )
    return answered, failed
