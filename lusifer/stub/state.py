"""The mutable state one stub server shares between its request threads."""

from __future__ import annotations

import copy
import threading
from typing import Any

from lusifer.stub.config import FaultKind, StubConfig
from lusifer.stub.faults import FaultSchedule

CHAT_PATH = "/v1/chat/completions"


class StubState:
    """Config, fault schedule and request log behind one lock."""

    def __init__(self, config: StubConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._schedule = FaultSchedule(config.fault_seed)
        self._log: list[dict[str, Any]] = []
        # The Files and Batches endpoints' objects, behind their own lock (lusifer.stub.batches).
        self.batch_lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        # Set when the server stops, to cut short the latency and timeout sleeps of handlers.
        self.stopping = threading.Event()

    @property
    def config(self) -> StubConfig:
        """The config in force; a request reads it once so an update never splits a request."""
        with self._lock:
            return self._config

    def update(self, **fields: Any) -> StubConfig:
        """Replace some config fields; the fault sequence restarts from the (new) seed."""
        with self._lock:
            self._config = self._config.updated(**fields)
            self._schedule = FaultSchedule(self._config.fault_seed)
            return self._config

    def reset(self) -> None:
        """Forget the request log and restart the fault sequence, as if freshly started."""
        with self._lock:
            self._log.clear()
            self._schedule = FaultSchedule(self._config.fault_seed)

    def draw(self, config: StubConfig) -> tuple[FaultKind | None, float]:
        """The fault and the latency for the next chat request."""
        with self._lock:
            schedule = self._schedule
        return schedule.draw(config), schedule.latency(config)

    def record(self, entry: dict[str, Any]) -> None:
        """Append one entry to the request log."""
        with self._lock:
            self._log.append(entry)

    def mark(self, entry: dict[str, Any], **fields: Any) -> None:
        """Update fields of a logged entry (under the lock readers copy the log with)."""
        with self._lock:
            entry.update(fields)

    def requests(self) -> list[dict[str, Any]]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return copy.deepcopy(self._log)

    def chat_request_count(self) -> int:
        """How many chat completion requests arrived (whatever their outcome)."""
        with self._lock:
            return sum(1 for entry in self._log if entry["path"] == CHAT_PATH)
