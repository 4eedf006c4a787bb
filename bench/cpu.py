"""CPU seconds each process of a run used: on a shared machine wall time is noisy, CPU time
per LLM call says what the run costs and what it would take on an idle one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: utime and stime are fields 14 and 15 of stat(5).
    return sum(int(v) for v in fields[11:13]) / _TICKS


def postgres_backends(admin_url: str, application_name: str) -> list[int]:
    """PIDs of the PostgreSQL backends serving connections with ``application_name``."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def redis_server_pid() -> int | None:
    """PID of the local redis-server (shared with other users of the machine)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "redis-server":
                    return int(entry.name)
            except OSError:
                continue
    return None


class CpuMeter:
    """CPU seconds per named group of processes between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0
        self._started = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: process_cpu_s(pid) for pid in pids()} for name, pids in self._groups.items()
        }

    def since_last(self) -> dict[str, float]:
        """CPU seconds per group since the previous call (or ``start``), and start anew.

        A process that appeared since counts from zero; one that ended takes its last seconds
        with it (PostgreSQL backends come and go: a window may miss a little, never double).
        """
        after = self._sample()
        spent = {
            name: sum(cpu - self._before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in after.items()
        }
        self._before = after
        return spent

    def start(self) -> None:
        """Remember where each process stands."""
        self._before = self._sample()
        self._started = time.perf_counter()

    def stop(self) -> None:
        """CPU used since ``start``; processes that appeared since count from zero."""
        self.wall_s = time.perf_counter() - self._started
        after = self._sample()
        for name, pids in after.items():
            before = self._before.get(name, {})
            self.seconds[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
