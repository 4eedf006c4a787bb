"""The Files and Batches endpoints of an OpenAI-compatible server, with the online client's
error classification and retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lusifer.batchapi.lines import CHAT_ENDPOINT
from lusifer.llm import OpenAIEndpoint

if TYPE_CHECKING:
    # A type only: the SDK itself is imported by the first call (``OpenAIEndpoint``).
    from openai.types import Batch

# Terminal states of a batch: nothing more will change in it.
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
# A batch that failed for one of these reasons may pass later: its lines are tried again.
TRANSIENT_FAILURES = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "server_error"})
# A batch in one of these states will still answer (or has answered) its lines.
LIVE = frozenset({"validating", "in_progress", "finalizing", "completed"})


@dataclass(frozen=True)
class BatchInfo:
    """What the provider says of a batch."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    error_codes: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """True when the batch will change no more."""
        return self.status in FINISHED

    @property
    def refused(self) -> bool:
        """True when the provider refused the whole batch for good (it failed validation)."""
        return self.status == "failed" and not TRANSIENT_FAILURES.intersection(self.error_codes)


def _info(batch: Batch) -> BatchInfo:
    counts = batch.request_counts
    found = (batch.errors.data or []) if batch.errors else []
    errors = tuple(
        f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line is not None else "")
        for e in found
    )
    return BatchInfo(
        id=batch.id,
        status=batch.status,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        metadata=dict(batch.metadata or {}),
        errors=errors,
        error_codes=tuple(e.code or "" for e in found),
    )


class BatchClient(OpenAIEndpoint):
    """Upload request files, create, find and poll batches, download their result files."""

    def submit(self, content: bytes, metadata: dict[str, str], window: str) -> BatchInfo:
        """Upload ``content`` as a batch input file and start a batch over it."""
        uploaded = self._call(
            lambda: self._client.files.create(file=("requests.jsonl", content), purpose="batch")
        )
        window_arg: Any = window  # the SDK types the window as the literal "24h"
        batch = self._call(
            lambda: self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=CHAT_ENDPOINT,
                completion_window=window_arg,
                metadata=metadata,
            )
        )
        return _info(batch)

    def find(self, metadata: dict[str, str]) -> BatchInfo | None:
        """A live batch carrying ``metadata`` (one submitted before a crash), if any."""
        page = self._call(lambda: self._client.batches.list(limit=100))
        for batch in page.data:
            info = _info(batch)
            if info.status in LIVE and all(info.metadata.get(k) == v for k, v in metadata.items()):
                return info
        return None

    def retrieve(self, batch_id: str) -> BatchInfo:
        """The current state of a batch."""
        return _info(self._call(lambda: self._client.batches.retrieve(batch_id)))

    def download(self, file_id: str) -> str:
        """The text of a result file."""
        return self._call(lambda: self._client.files.content(file_id)).text
