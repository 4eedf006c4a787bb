"""Evaluation tables for people: every method per fold, across folds, cold start, fidelity."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from rich.console import Console
from rich.table import Table

from coordinator.evaluate import Report
from lusifer.evaluate.folds import PAPER_GPT35, SIMULATOR, FoldEvaluation, MethodScore, across_folds
from lusifer.evaluate.metrics import mean_std


def fmt(value: float, digits: int = 3) -> str:
    """A number, or an en dash where it is undefined."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std``; the mean alone for one fold."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def row_keys(folds: list[FoldEvaluation]) -> list[tuple[str, str]]:
    """(key, label) of every method row, in the order of the first fold."""
    seen: dict[str, str] = {}
    for f in folds:
        for m in f.methods:
            seen.setdefault(m.key, m.label)
    return list(seen.items())


def _rows(folds: list[FoldEvaluation], key: str) -> list[MethodScore | None]:
    return [f.row(key) for f in folds]


def rmse_per_fold_table(report: Report) -> Table:
    """RMSE of every method on every fold, with mean ± std and the paper's row."""
    folds = report.folds
    table = Table(title="RMSE per fold (same ratings for every method)", title_justify="left")
    table.add_column("method")
    for f in folds:
        table.add_column(f"{f.fold} (n={f.n_scored})", justify="right")
    table.add_column("mean ± std", justify="right")
    for key, label in row_keys(folds):
        values = [r.overall.rmse if r else math.nan for r in _rows(folds, key)]
        style = "bold" if key.startswith(SIMULATOR) else None
        table.add_row(label, *map(fmt, values), fmt_pm(*mean_std(values)), style=style)
    if report.source != "baselines" and any(f.fold in PAPER_GPT35 for f in folds):
        paper = [PAPER_GPT35[f.fold][0] if f.fold in PAPER_GPT35 else math.nan for f in folds]
        table.add_row(
            "Paper GPT-3.5 (published)",
            *(fmt(v, 2) for v in paper),
            fmt_pm(*mean_std([v for v in paper if not math.isnan(v)]), 3),
            style="dim",
        )
    return table


def summary_table(report: Report) -> Table:
    """Every metric of every method, mean ± std across folds."""
    summary = across_folds(report.folds)
    title = "Across folds: mean ± std" if len(report.folds) > 1 else f"{report.folds[0].fold}"
    table = Table(title=title, title_justify="left")
    for name in ("method", "RMSE", "MAE", "Pearson", "exact %", "±1 %", "close %"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for key, label in row_keys(report.folds):
        s = summary.get(key)
        if s is None:
            continue
        table.add_row(
            label,
            fmt_pm(*s["rmse"]),
            fmt_pm(*s["mae"]),
            fmt_pm(*s["pearson"]),
            fmt_pm(*s["exact_match_pct"], 1),
            fmt_pm(*s["off_by_one_pct"], 1),
            fmt_pm(*s["close_match_pct"], 1),
            style="bold" if key.startswith(SIMULATOR) else None,
        )
    return table


def cold_start_table(report: Report) -> Table:
    """RMSE on users with fewer than K training ratings, per fold."""
    folds = report.folds
    k = report.options.cold_k
    table = Table(title=f"Cold start: users with < {k} training ratings", title_justify="left")
    table.add_column("method")
    for f in folds:
        table.add_column(f"{f.fold} ({f.n_cold_ratings} r, {f.n_cold_users} u)", justify="right")
    for key, label in row_keys(folds):
        values = [r.cold.rmse if r else math.nan for r in _rows(folds, key)]
        table.add_row(label, *map(fmt, values))
    return table


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def fidelity_table(report: Report) -> Table:
    """Distribution statistics of the simulator and the rounded baselines (mean over folds)."""
    folds = report.folds
    title = "Behavioural fidelity" + (" (mean over folds)" if len(folds) > 1 else "")
    table = Table(title=title, title_justify="left")
    for name in ("method", "mean", "var", "W1", "KL", "user r", "bias", "1/2/3/4/5 %"):
        table.add_column(name, justify="left" if name == "method" else "right")
    real = [f.methods[0].fidelity for f in folds]
    shares = np.nanmean([fd.real_shares for fd in real], axis=0) * 100
    table.add_row(
        "Real ratings",
        fmt(_mean(fd.real_mean for fd in real), 2),
        fmt(_mean(fd.real_var for fd in real), 2),
        "0",
        "0",
        "–",
        "0",
        "/".join(f"{s:.0f}" for s in shares),
        style="dim",
    )
    for key, label in row_keys(folds):
        if key.endswith("/continuous"):
            continue
        fids = [r.fidelity for r in _rows(folds, key) if r is not None]
        shares = np.nanmean([fd.sim_shares for fd in fids], axis=0) * 100
        table.add_row(
            label,
            fmt(_mean(fd.sim_mean for fd in fids), 2),
            fmt(_mean(fd.sim_var for fd in fids), 2),
            fmt(_mean(fd.wasserstein for fd in fids)),
            fmt(_mean(fd.kl for fd in fids)),
            fmt(_mean(fd.per_user_r for fd in fids)),
            f"{_mean(fd.positivity_bias for fd in fids):+.3f}",
            "/".join(f"{s:.0f}" for s in shares),
            style="bold" if key.startswith(SIMULATOR) else None,
        )
    return table


def bootstrap_lines(report: Report) -> list[str]:
    """One line per fold: simulator minus best baseline, with its 95 % interval."""
    lines = []
    for f in report.folds:
        ci, best = f.bootstrap, f.best_baseline
        if ci is None or best is None or math.isnan(ci.estimate):
            continue
        row = f.row(best)
        label = row.label if row else best
        lines.append(
            f"{f.fold}: RMSE simulator − {label} = {ci.estimate:+.3f}, "
            f"{ci.level:.0%} CI [{ci.low:+.3f}, {ci.high:+.3f}] "
            f"({ci.n_resamples} resamples of {ci.n_units} {ci.unit}, seed {ci.seed})"
            + (
                f"; only {ci.n_units} {ci.unit}: read it as a rough guide"
                if ci.n_units < 10
                else ""
            )
        )
    return lines


def print_evaluation(console: Console, report: Report) -> None:
    """Print every evaluation table of a report."""
    if not report.folds:
        console.print("nothing to evaluate: no fold has scored ratings")
        return
    console.print(rmse_per_fold_table(report))
    console.print(summary_table(report))
    console.print(cold_start_table(report))
    if report.source != "baselines":
        console.print(fidelity_table(report))
    for line in bootstrap_lines(report):
        console.print(line, highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
