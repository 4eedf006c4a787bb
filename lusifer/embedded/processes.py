"""Child processes of local mode that never outlive the command that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM when its parent dies.

    Even a SIGKILLed coordinator then leaves no model server, broker or worker behind.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_file(work_dir: Path, name: str) -> int:
    """An append-only file descriptor under ``WORK_DIR/logs`` for a child's output."""
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return os.open(logs / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
