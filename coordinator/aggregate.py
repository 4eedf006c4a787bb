"""The aggregator: per-fold metrics, coverage and LLM accounting, read from the database."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from lusifer.core.config import LLMConfig, parse_run_config
from lusifer.core.errors import DataError
from lusifer.evaluate.metrics import METRIC_FIELDS, RatingMetrics, mean_std, summarize
from lusifer.store.call_cache import call_cost
from lusifer.store.tables import CallUse, Job, JobState, LLMCall, Run, SimulatedRating


@dataclass(frozen=True)
class FoldResult:
    """Everything the report says about one fold."""

    fold: str
    metrics: RatingMetrics
    n_expected: int
    n_rated: int
    calls: int
    cache_hits: int
    retries: int
    reasks: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    failed_jobs: int
    # Prompt tokens the server answered from its prefix cache (where it says so).
    cached_tokens: int = 0

    @property
    def coverage_pct(self) -> float:
        """Share of the fold's test ratings that got a simulated rating."""
        return 100.0 * self.n_rated / self.n_expected if self.n_expected else math.nan


def stored_ratings(engine: Engine, run_id: str, fold: str) -> tuple[np.ndarray, np.ndarray]:
    """True and simulated ratings of a fold, for the test items that were rated."""
    with Session(engine) as session:
        rows = session.exec(
            select(SimulatedRating.true_rating, SimulatedRating.rating)
            .where(
                SimulatedRating.run_id == run_id,
                SimulatedRating.fold == fold,
                col(SimulatedRating.rating).is_not(None),
            )
            # A fixed order makes identical runs give bit-identical floating-point metrics.
            .order_by(col(SimulatedRating.user_id), col(SimulatedRating.item_id))
        ).all()
    true = np.array([r[0] for r in rows], dtype=float)
    pred = np.array([r[1] for r in rows], dtype=float)
    return true, pred


def _llm_config(engine: Engine, run_id: str) -> LLMConfig:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise DataError(f"run {run_id!r} is not in the database; check the run id")
        return parse_run_config(json.loads(run.config_json)).llm


def aggregate_fold(engine: Engine, run_id: str, fold: str) -> FoldResult:
    """Metrics and accounting of one fold of a run."""
    true, pred = stored_ratings(engine, run_id, fold)
    with Session(engine) as session:
        n_expected = session.exec(
            select(func.count()).where(
                SimulatedRating.run_id == run_id, SimulatedRating.fold == fold
            )
        ).one()
        usage = session.execute(
            sa_select(
                func.count(),
                func.coalesce(func.sum(case((col(CallUse.cached), 1), else_=0)), 0),
                func.coalesce(func.sum(CallUse.retries), 0),
                func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
                func.coalesce(func.sum(LLMCall.completion_tokens), 0),
                func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
                func.coalesce(func.sum(LLMCall.cached_tokens), 0),
            )
            .select_from(CallUse)
            .join(LLMCall, col(LLMCall.key) == col(CallUse.call_key))
            .where(col(CallUse.run_id) == run_id, col(CallUse.fold) == fold)
        ).one()
        jobs = session.exec(
            select(
                func.coalesce(func.sum(Job.reasks), 0),
                func.coalesce(func.sum(case((col(Job.state) == JobState.FAILED, 1), else_=0)), 0),
            ).where(Job.run_id == run_id, Job.fold == fold)
        ).one()
    calls, cached, retries, prompt_tokens, completion_tokens, _stored_cost, cached_tokens = usage
    # Priced at this run's prices: a call cached by another run keeps that run's price.
    cost = call_cost(_llm_config(engine, run_id), int(prompt_tokens), int(completion_tokens))
    return FoldResult(
        fold=fold,
        metrics=summarize(true, pred),
        n_expected=int(n_expected),
        n_rated=int(true.size),
        calls=int(calls),
        cache_hits=int(cached),
        retries=int(retries),
        reasks=int(jobs[0]),
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        cost_usd=float(cost),
        failed_jobs=int(jobs[1]),
        cached_tokens=int(cached_tokens),
    )


def aggregate_run(engine: Engine, run_id: str, folds: tuple[str, ...]) -> list[FoldResult]:
    """Per-fold results of a run, in fold order."""
    return [aggregate_fold(engine, run_id, fold) for fold in folds]


def across_folds(results: list[FoldResult]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each metric (and coverage) across folds."""
    summary = {
        name: mean_std([float(getattr(r.metrics, name)) for r in results]) for name in METRIC_FIELDS
    }
    summary["coverage_pct"] = mean_std([r.coverage_pct for r in results])
    return summary
