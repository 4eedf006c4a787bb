"""The report's numbers as DataFrames: per-fold results of a run, or metrics of any frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from coordinator.aggregate import FoldResult
from lusifer.core.errors import DataError
from lusifer.evaluate.metrics import summarize


def fold_results_frame(results: list[FoldResult]) -> pd.DataFrame:
    """One row per fold: the six metrics, n, coverage and the LLM accounting."""
    rows = []
    for result in results:
        row = {"fold": result.fold, **dataclasses.asdict(result.metrics)}
        row["coverage_pct"] = result.coverage_pct
        for name in ("n_expected", "calls", "cache_hits", "reasks", "failed_jobs"):
            row[name] = getattr(result, name)
        row["prompt_tokens"] = result.prompt_tokens
        row["completion_tokens"] = result.completion_tokens
        row["cost_usd"] = result.cost_usd
        rows.append(row)
    return pd.DataFrame(rows)


def score_frame(
    rated: pd.DataFrame,
    truth: str = "rating",
    simulated: str = "simulated_rating",
    user: str = "user_id",
    item: str = "item_id",
) -> pd.DataFrame:
    """The six metrics of the rows with both ratings (one row; a ``fold`` column groups)."""
    missing = [c for c in (truth, simulated) if c not in rated.columns]
    if missing:
        raise DataError(
            f"the frame lacks column(s) {', '.join(missing)}: pass rate()'s output, which "
            f"holds {truth!r} and {simulated!r}"
        )
    groups = rated.groupby("fold", sort=True) if "fold" in rated.columns else [("all", rated)]
    rows = []
    for fold, part in groups:
        answered = part[part[simulated].notna() & part[truth].notna()]
        # The report's order (user, item) makes the floating-point sums bit-identical.
        keys = [c for c in (user, item) if c in answered.columns]
        if keys:
            answered = answered.sort_values(keys, kind="stable")
        true = np.asarray(answered[truth], dtype=np.float64)
        pred = np.asarray(answered[simulated], dtype=np.float64)
        metrics = dataclasses.asdict(summarize(true, pred))
        coverage = 100.0 * len(answered) / len(part) if len(part) else float("nan")
        rows.append({"fold": fold, **metrics, "coverage_pct": coverage})
    return pd.DataFrame(rows)
