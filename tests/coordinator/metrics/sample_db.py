"""A SQLite database of hand-made runs, jobs, ratings and calls, for the metrics tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlmodel import Session

from lusifer.store.engines import create_tables
from lusifer.store.tables import CallUse, Job, LLMCall, Run, SimulatedRating

NOW = datetime.now(UTC)


def _run(rid: str, status: str, finished: datetime | None = None, spent: float = 0.0) -> Run:
    return Run(
        id=rid,
        config_json="{}",
        prompt_set="lusifer",
        prompt_version="2",
        prompt_hash="h",
        prompts_json="{}",
        dataset_fingerprint="f",
        status=status,
        created_at=NOW - timedelta(hours=1),
        finished_at=finished,
        spent_usd=spent,
    )


def _job(rid: str, fold: str, user: int, kind: str, state: str, **extra: object) -> Job:
    return Job(
        id=f"{rid}/{fold}/{user}/{kind}",
        run_id=rid,
        fold=fold,
        user_id=user,
        kind=kind,
        state=state,
        inputs_json="{}",
        updated_at=NOW,
        **extra,
    )


def _call(key: str, latency: float, prompt: int, completion: int, cost: float) -> LLMCall:
    return LLMCall(
        key=key,
        model="m",
        request_json="{}",
        response_text="{}",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=prompt // 2,
        latency_s=latency,
        cost_usd=cost,
    )


def sample_database(path: Path) -> Engine:
    """Runs "open" (running), "ended" (done 5 minutes ago) and "old" (done 3 days ago)."""
    engine = create_engine(f"sqlite:///{path}")
    create_tables(engine)
    with Session(engine) as s:
        s.add(_run("open", "running", spent=0.5))
        s.add(_run("ended", "done", finished=NOW - timedelta(minutes=5), spent=0.25))
        s.add(_run("old", "done", finished=NOW - timedelta(days=3)))
        s.add(_job("open", "u1", 1, "profile", "done", attempts=2, reasks=1))
        s.add(_job("open", "u1", 2, "profile", "running", attempts=1))
        s.add(_job("open", "u1", 1, "rating", "queued"))
        s.add(_job("open", "u2", 3, "profile", "failed", attempts=12, reasks=2))
        s.add(_job("ended", "u1", 1, "profile", "done", attempts=1))
        s.add(_job("old", "u1", 1, "profile", "done", attempts=1))
        for item, rating in ((10, 4), (11, None), (12, 2)):
            s.add(
                SimulatedRating(
                    run_id="open",
                    fold="u1",
                    user_id=1,
                    item_id=item,
                    true_rating=3,
                    rating=rating,
                    job_id="j",
                )
            )
        s.add(_call("a", 0.2, 100, 10, 0.01))
        s.add(_call("b", 3.0, 200, 20, 0.02))
        s.add(_call("c", 150.0, 300, 30, 0.03))
        s.add(CallUse(run_id="open", job_id="j1", call_key="a", fold="u1", retries=2))
        s.add(CallUse(run_id="open", job_id="j2", call_key="b", fold="u1", retries=0))
        s.add(CallUse(run_id="open", job_id="j3", call_key="c", fold="u1", cached=True))
        s.add(CallUse(run_id="ended", job_id="j1", call_key="c", fold="u1", retries=1))
        s.commit()
    return engine
