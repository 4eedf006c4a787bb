"""One `lusifer run` in local mode, as a user starts it, and what its database says afterwards.

Local mode with no ``--base-url`` starts the SmolLM2 model server itself; with the stub's URL
it talks to the stub instead (a quick check of the harness). The run's embedded database stays in
``work_dir`` so several runs (two prompt sets on the same users) can be compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from coordinator.aggregate import aggregate_run
from lusifer.core.errors import ServiceError
from lusifer.embedded.postgres import database_url_for
from lusifer.store.engines import get_engine
from lusifer.store.tables import CallUse, Job, JobKind, LLMCall

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class LocalRun:
    """A finished local-mode run."""

    run_id: str
    work_dir: Path
    wall_s: float

    @property
    def engine(self) -> Engine:
        """The work directory's embedded database (joined, held until this process exits)."""
        return get_engine(database_url_for(self.work_dir, create=False))


_KEPT = frozenset({"LUSIFER_LOCAL_THREADS", "LUSIFER_LOG_LEVEL"})


def run_local(
    work_dir: Path,
    run_id: str,
    data_dir: Path,
    *,
    prompt_set: str,
    users: int,
    fold: str,
    overview_chars: int,
    base_url: str | None,
    threads: int | None = None,
) -> LocalRun:
    """Run `lusifer run` in local mode and wait for it; a failure raises with its output."""
    args = [
        str(VENV_BIN / "lusifer"),
        "run",
        "--run-id",
        run_id,
        "--data-dir",
        str(data_dir),
        "--folds",
        fold,
        "--max-users",
        str(users),
        "--prompt-set",
        prompt_set,
        "--overview-chars",
        str(overview_chars),
    ]
    if base_url is not None:
        args += ["--base-url", base_url, "--model", "stub-model"]
    if threads is not None:
        args += ["--threads", str(threads)]
    # Local mode, whatever this shell points at: no broker, database or key of the caller's;
    # how the local model runs (its threads) is the caller's to say.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LUSIFER_", "OPENAI_")) or k in _KEPT
    }
    env.update(LUSIFER_WORK_DIR=str(work_dir), COLUMNS="120")
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise ServiceError(f"`lusifer run` ({prompt_set}) failed: {' | '.join(tail)}")
    return LocalRun(run_id, work_dir, wall)


def _call_rows(run: LocalRun) -> list[tuple[str, bool, int, int, float, datetime]]:
    """(job kind, cached, prompt tokens, cached tokens, latency, recorded at) of every call use."""
    with Session(run.engine) as session:
        rows = session.execute(
            select(
                col(Job.kind),
                col(CallUse.cached),
                col(LLMCall.prompt_tokens),
                col(LLMCall.cached_tokens),
                col(LLMCall.latency_s),
                col(LLMCall.created_at),
            )
            .join(Job, col(Job.id) == col(CallUse.job_id))
            .join(LLMCall, col(LLMCall.key) == col(CallUse.call_key))
            .where(col(CallUse.run_id) == run.run_id)
        ).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def token_figures(run: LocalRun, fold: str) -> dict[str, Any]:
    """Prompt tokens per simulated rating and the fidelity of the run's ratings."""
    rows = _call_rows(run)
    (result,) = aggregate_run(run.engine, run.run_id, (fold,))
    rating_tokens = sum(r[2] for r in rows if r[0] == JobKind.RATING)
    all_tokens = sum(r[2] for r in rows)
    rated = result.n_rated
    return {
        "run_id": run.run_id,
        "rated": rated,
        "expected": result.n_expected,
        "coverage_pct": result.coverage_pct,
        "calls": len(rows),
        "rating_calls": sum(1 for r in rows if r[0] == JobKind.RATING),
        "rating_prompt_tokens": rating_tokens,
        "all_prompt_tokens": all_tokens,
        "cached_prompt_tokens": sum(r[3] for r in rows),
        "rating_tokens_per_rating": rating_tokens / rated if rated else 0.0,
        "all_tokens_per_rating": all_tokens / rated if rated else 0.0,
        "rmse": result.metrics.rmse,
        "exact_match_pct": result.metrics.exact_match_pct,
        "close_match_pct": result.metrics.close_match_pct,
        "wall_s": run.wall_s,
    }


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    busy, cursor = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= cursor:
            continue
        busy += end - max(start, cursor)
        cursor = end
    return busy


def utilisation_figures(run: LocalRun) -> dict[str, Any]:
    """How busy the model server was: the union of its calls' time over the run's time.

    A call's interval ends when it was recorded and began ``latency_s`` before; calls served
    from the cache took no server time.
    """
    rows = [r for r in _call_rows(run) if not r[1]]
    intervals = [(r[5].timestamp() - r[4], r[5].timestamp()) for r in rows]
    if not intervals:
        return {"run_id": run.run_id, "calls": 0}
    first = min(start for start, _ in intervals)
    last = max(end for _, end in intervals)
    busy = busy_seconds(intervals)
    window = last - first
    return {
        "run_id": run.run_id,
        "calls": len(rows),
        "busy_s": busy,
        "calls_window_s": window,
        "command_wall_s": run.wall_s,
        "utilisation_window": busy / window if window else 0.0,
        "utilisation_command": busy / run.wall_s if run.wall_s else 0.0,
        "sum_latency_s": sum(r[4] for r in rows),
        "mean_latency_s": sum(r[4] for r in rows) / len(rows),
    }
