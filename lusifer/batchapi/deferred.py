"""A chat model for collect mode: it answers from finished batch lines, or defers.

Jobs run with it exactly as they run online (wrapped in ``RecordedModel``, so the call cache
is asked first and every answer is committed as an ordinary recorded call). A request with no
answer yet is noted as pending and ``Deferred`` stops the job without failing it; the batch
driver submits the pending requests and runs the job again when their answers are in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, select

from lusifer.core.errors import PermanentLLMError, TransientLLMError
from lusifer.llm import ChatModel, ChatRequest, ChatResult
from lusifer.store.tables import BatchLineOutcome, LLMBatchLine


class Deferred(Exception):
    """The job asked for an answer that the next batch will bring.

    Deliberately not a ``LusiferError``: nothing that handles failures may catch it.
    """


@dataclass(frozen=True)
class PendingCall:
    """A request to put in the next batch, and the job that asked first."""

    request: ChatRequest
    job_id: str


class DeferredCalls:
    """The answers of a run's batch lines; collects what is still to be asked."""

    def __init__(self, engine: Engine, run_id: str, *, max_attempts: int, price_factor: float):
        self._engine = engine
        self._run_id = run_id
        self._max_attempts = max_attempts
        self._price_factor = price_factor
        self._lock = threading.Lock()  # jobs of a pass run on threads
        self._pending: dict[str, PendingCall] = {}

    def pending(self) -> list[PendingCall]:
        """The requests to ask, in job order whatever order the threads ran in."""
        with self._lock:
            return sorted(self._pending.values(), key=lambda call: call.job_id)

    def for_job(self, job_id: str) -> ChatModel:
        """The chat model a job runs with."""
        return _JobModel(self, job_id)

    def answer(self, request: ChatRequest, job_id: str) -> ChatResult:
        """The batch's answer to ``request``, or ``Deferred`` after noting it as pending."""
        key = request.cache_key()
        with Session(self._engine) as session:
            lines = session.exec(
                select(LLMBatchLine).where(
                    LLMBatchLine.run_id == self._run_id, LLMBatchLine.call_key == key
                )
            ).all()
        for line in lines:
            if line.outcome == BatchLineOutcome.ANSWERED:
                return ChatResult(
                    text=line.response_text or "",
                    prompt_tokens=line.prompt_tokens,
                    completion_tokens=line.completion_tokens,
                    cached_tokens=line.cached_tokens,
                    retries=len(lines) - 1,
                    price_factor=self._price_factor,
                )
        if any(line.outcome == BatchLineOutcome.AWAITING for line in lines):
            raise Deferred(key)  # in a batch still running: never submitted twice
        refused = [line for line in lines if line.outcome == BatchLineOutcome.PERMANENT]
        if refused:
            line = refused[0]
            raise PermanentLLMError(
                f"the batch refused a request ({line.status_code}: {line.error}); "
                "check the model's options"
            )
        if len(lines) >= self._max_attempts:
            last = lines[-1]
            raise TransientLLMError(
                f"gave up after {len(lines)} batch attempts ({last.status_code}: {last.error})"
            )
        with self._lock:
            known = self._pending.get(key)
            # Two jobs asking the same thing: the line names the first by id, deterministically.
            if known is None or job_id < known.job_id:
                self._pending[key] = PendingCall(request, job_id)
        raise Deferred(key)


class _JobModel:
    """``DeferredCalls`` seen from one job, so pending lines name the job that asked."""

    def __init__(self, calls: DeferredCalls, job_id: str) -> None:
        self._calls = calls
        self._job_id = job_id

    def complete(self, request: ChatRequest) -> ChatResult:
        return self._calls.answer(request, self._job_id)
