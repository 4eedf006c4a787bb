"""Result tables for people: one row per fold, then mean ± std across folds."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from coordinator.aggregate import FoldResult, across_folds


def _num(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metrics_table(results: list[FoldResult], title: str) -> Table:
    """Fidelity per fold with a mean ± std row."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in ("fold", "RMSE", "MAE", "Pearson", "exact %", "±1 %", "close %", "coverage %"):
        table.add_column(name, justify="left" if name == "fold" else "right")
    for r in results:
        m = r.metrics
        table.add_row(
            r.fold,
            _num(m.rmse),
            _num(m.mae),
            _num(m.pearson),
            _pct(m.exact_match_pct),
            _pct(m.off_by_one_pct),
            _pct(m.close_match_pct),
            _pct(r.coverage_pct),
        )
    if len(results) > 1:
        s = across_folds(results)
        table.add_section()
        table.add_row(
            "mean ± std",
            _pm(*s["rmse"], 3),
            _pm(*s["mae"], 3),
            _pm(*s["pearson"], 3),
            _pm(*s["exact_match_pct"], 1),
            _pm(*s["off_by_one_pct"], 1),
            _pm(*s["close_match_pct"], 1),
            _pm(*s["coverage_pct"], 1),
            style="bold",
        )
    return table


def cost_table(results: list[FoldResult]) -> Table:
    """LLM calls, tokens (and how many the server's prefix cache served) and cost per fold."""
    table = Table(title="LLM usage", title_justify="left", header_style="bold")
    names = ("fold", "rated", "LLM calls", "from cache", "prompt tok", "cached tok", "compl. tok")
    for name in (*names, "cost $"):
        table.add_column(name, justify="left" if name == "fold" else "right")
    rows = [
        (
            r.fold,
            f"{r.n_rated}/{r.n_expected}",
            r.calls,
            r.cache_hits,
            r.prompt_tokens,
            r.cached_tokens,
            r.completion_tokens,
            r.cost_usd,
        )
        for r in results
    ]
    if len(results) > 1:
        rows.append(
            (
                "total",
                f"{sum(r.n_rated for r in results)}/{sum(r.n_expected for r in results)}",
                sum(r.calls for r in results),
                sum(r.cache_hits for r in results),
                sum(r.prompt_tokens for r in results),
                sum(r.cached_tokens for r in results),
                sum(r.completion_tokens for r in results),
                sum(r.cost_usd for r in results),
            )
        )
    for fold, rated, calls, cached, prompt, prompt_cached, completion, cost in rows:
        table.add_row(
            fold,
            rated,
            f"{calls:,}",
            f"{cached:,}",
            f"{prompt:,}",
            f"{prompt_cached:,}",
            f"{completion:,}",
            f"{cost:.4f}",
        )
    return table


def print_report(console: Console, run_id: str, results: list[FoldResult], header: str) -> None:
    """Print the metrics table and a line on failures and re-asks."""
    console.print(metrics_table(results, f"Lusifer run {run_id} — {header}"))
    console.print(cost_table(results))
    failed = sum(r.failed_jobs for r in results)
    reasks = sum(r.reasks for r in results)
    retries = sum(r.retries for r in results)
    console.print(
        f"jobs failed: {failed}   re-asks: {reasks}   transient retries: {retries}   "
        f"(`lusifer status {run_id}` lists failures)"
    )
