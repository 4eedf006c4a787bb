"""Who runs step requests: threads of this process, or Celery workers through the broker.

Both run ``execute_env_request`` on request ids and leave the results in the database; the
environment reads them from there. ``LocalExecutor`` runs a batch of requests in threads, so a
vector step of N users costs about one LLM latency; ``CeleryExecutor`` sends each id to the
queue by task name and polls the database until every request has finished.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy import Engine

from lusifer.core.errors import LLMError, ServiceError
from lusifer.env.dynamics import execute_env_request
from lusifer.env.store import fail_request, set_state, still_queued, wait_for, wait_some
from lusifer.llm import ChatModel
from lusifer.queue import send_env_requests
from lusifer.store.tables import JobState


class StepExecutor(Protocol):
    """Runs step requests to their end (done or failed in the database)."""

    def run(self, request_ids: Sequence[str]) -> None:
        """Run the requests and return when each has finished."""
        ...

    def close(self) -> None:
        """Release threads or connections."""
        ...


class LocalExecutor:
    """Runs requests in this process, a batch at once in up to ``max_threads`` threads."""

    def __init__(self, engine: Engine, model: ChatModel, max_threads: int = 32) -> None:
        self._engine = engine
        self._model = model
        self._max_threads = max(1, max_threads)
        self._pool: ThreadPoolExecutor | None = None

    def _one(self, rid: str) -> None:
        try:
            execute_env_request(self._engine, rid, lambda _config: self._model)
        except LLMError as err:
            # The model client already retried transient errors; what is left fails the step.
            fail_request(self._engine, rid, err)

    def run(self, request_ids: Sequence[str]) -> None:
        """Run the requests, concurrently when there are several."""
        if len(request_ids) == 1:
            self._one(request_ids[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_threads, thread_name_prefix="lusifer-env")
        list(self._pool.map(self._one, request_ids))

    def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# Sends of one step before it fails as lost (a worker that took it marks it running).
MAX_SENDS = 3


class CeleryExecutor:
    """Sends request ids to Celery workers and waits for their results in the database."""

    def __init__(
        self,
        engine: Engine,
        app: Celery,
        queue: str,
        timeout_s: float = 900.0,
        resend_after_s: float = 60.0,
    ) -> None:
        self._engine = engine
        self._app = app
        self._queue = queue
        self._timeout_s = timeout_s
        self._resend_after_s = resend_after_s

    def run(self, request_ids: Sequence[str]) -> None:
        """Queue the ids (ids only: the rows hold the data) and poll until all finished."""
        if not request_ids:
            return
        set_state(self._engine, request_ids, JobState.QUEUED)
        self._send(request_ids)
        # A step is a job like any other: a message lost with a restarted broker or a killed
        # worker's prefetch is sent again (a few times, then the step fails saying why).
        deadline = time.monotonic() + self._timeout_s
        sends = dict.fromkeys(request_ids, 1)
        left = list(request_ids)
        while left:
            slice_s = min(self._resend_after_s, max(0.0, deadline - time.monotonic()))
            left = wait_some(self._engine, left, slice_s)
            if not left:
                return
            if time.monotonic() >= deadline:
                wait_for(self._engine, left, 0.0, f"queue {self._queue!r}")  # raises
            lost = still_queued(self._engine, left)
            again = [rid for rid in lost if sends[rid] < MAX_SENDS]
            for rid in lost:
                if sends[rid] >= MAX_SENDS:
                    fail_request(
                        self._engine,
                        rid,
                        ServiceError(
                            f"environment step {rid} was sent {MAX_SENDS} times and no worker "
                            f"took it; check that workers consume queue {self._queue!r}"
                        ),
                    )
            if again:
                self._send(again)
                for rid in again:
                    sends[rid] += 1

    def _send(self, request_ids: Sequence[str]) -> None:
        try:
            send_env_requests(self._app, request_ids, self._queue)
        except OperationalError as err:
            raise ServiceError(
                f"cannot send environment steps to the broker ({err}); "
                "start it or fix LUSIFER_BROKER_URL"
            ) from None

    def close(self) -> None:
        """Nothing to release: the Celery app's connections are pooled by Celery."""
