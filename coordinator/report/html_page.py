"""One self-contained HTML page per report: tables, and plots embedded as data URIs.

The page is rendered from ``templates/report.html.j2``; this module turns a ``Report`` into
the pre-formatted rows and plots the template lays out, so the template holds no arithmetic.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from coordinator.evaluate import Report
from coordinator.report import plots
from coordinator.report.eval_tables import bootstrap_lines, fmt, fmt_pm, row_keys
from lusifer.evaluate.folds import PAPER_GPT35, SIMULATOR, FoldEvaluation, across_folds
from lusifer.evaluate.metrics import mean_std
from lusifer.evaluate.slices import bucket_labels

TEMPLATES = Path(__file__).parent / "templates"
SIM_KEY = f"{SIMULATOR}/integer"


@cache
def environment() -> Environment:
    """The Jinja2 environment of the report templates (autoescaped, strict)."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _pct(value: float) -> str:
    return fmt(value, 1)


def _cls(key: str) -> str:
    if key == SIM_KEY:
        return "sim"
    return "rounded" if key.endswith("/rounded") else ""


def best_key(folds: list[FoldEvaluation], suffix: str = "") -> str | None:
    """Baseline row with the lowest mean RMSE across folds (optionally of one variant)."""
    summary = across_folds(folds)
    keys = [k for k in summary if not k.startswith(SIMULATOR) and k.endswith(suffix)]
    keys = [k for k in keys if not math.isnan(summary[k]["rmse"][0])]
    return min(keys, key=lambda k: summary[k]["rmse"][0]) if keys else None


def _label(folds: list[FoldEvaluation], key: str) -> str:
    return dict(row_keys(folds)).get(key, key)


def fold_tables(report: Report) -> list[dict[str, Any]]:
    """Per fold: every method's metrics, plus the paper's published row."""
    tables = []
    for f in report.folds:
        rows = [
            {
                "label": m.label,
                "cls": _cls(m.key),
                "cells": [
                    fmt(m.overall.rmse),
                    fmt(m.overall.mae),
                    fmt(m.overall.pearson),
                    _pct(m.overall.exact_match_pct),
                    _pct(m.overall.off_by_one_pct),
                    _pct(m.overall.close_match_pct),
                ],
            }
            for m in f.methods
        ]
        paper = PAPER_GPT35.get(f.fold) if report.source != "baselines" else None
        if paper is not None:
            cells = [f"{paper[0]:.2f}", "–", "–", "–", "–", f"{paper[1]:.2f}"]
            rows.append(
                {"label": "Paper GPT-3.5 (published, all users)", "cls": "paper", "cells": cells}
            )
        usage = next((u for u in report.usage if u.fold == f.fold), None)
        tables.append(
            {
                "fold": f.fold,
                "n_scored": f.n_scored,
                "n_test": f.n_test,
                "n_users": f.n_users,
                "coverage": None if usage is None else f"{usage.n_rated}/{usage.n_expected}",
                "rows": rows,
            }
        )
    return tables


def summary_rows(report: Report) -> list[dict[str, Any]]:
    """Mean ± std across folds per method, and the paper's figures over the same folds."""
    summary = across_folds(report.folds)
    rows = []
    for key, label in row_keys(report.folds):
        s = summary.get(key)
        if s is None:
            continue
        cells = [fmt_pm(*s[n]) for n in ("rmse", "mae", "pearson")]
        cells += [
            fmt_pm(*s[n], 1) for n in ("exact_match_pct", "off_by_one_pct", "close_match_pct")
        ]
        rows.append({"label": label, "cls": _cls(key), "cells": cells})
    paper = [PAPER_GPT35[f.fold] for f in report.folds if f.fold in PAPER_GPT35]
    if paper and report.source != "baselines":
        rmse, close = mean_std([p[0] for p in paper]), mean_std([p[1] for p in paper])
        cells = [fmt_pm(*rmse), "–", "–", "–", "–", fmt_pm(*close, 2)]
        rows.append({"label": "Paper GPT-3.5 (published)", "cls": "paper", "cells": cells})
    return rows


def _pooled_buckets(folds: list[FoldEvaluation], key: str) -> tuple[list[float], list[int]]:
    """RMSE per history bucket over all folds: sqrt(sum n*rmse^2 / sum n)."""
    n_buckets = len(bucket_labels(folds[0].history_edges))
    sse, count = np.zeros(n_buckets), np.zeros(n_buckets, dtype=int)
    for f in folds:
        row = f.row(key)
        for k, b in enumerate(row.buckets if row else ()):
            if b.n:
                sse[k] += b.n * b.rmse**2
                count[k] += b.n
    rmse = [math.sqrt(s / n) if n else math.nan for s, n in zip(sse, count, strict=True)]
    return rmse, count.tolist()


def history_section(report: Report) -> dict[str, Any]:
    """RMSE by history length: a table of every method and a plot of the telling ones."""
    folds = report.folds
    labels = bucket_labels(folds[0].history_edges)
    rows, series, counts = [], {}, [0] * len(labels)
    shown = {SIM_KEY, best_key(folds), "global_mean/continuous"}
    for key, label in row_keys(folds):
        rmse, counts = _pooled_buckets(folds, key)
        rows.append({"label": label, "cls": _cls(key), "cells": [fmt(v) for v in rmse]})
        if key in shown:
            series[label] = rmse
    header = [f"{label} (n={n})" for label, n in zip(labels, counts, strict=True)]
    return {"header": header, "rows": rows, "plot": plots.history_lines(labels, series, counts)}


def fidelity_section(report: Report) -> dict[str, Any]:
    """Per-fold fidelity tables, pooled histograms and confusion heat maps."""
    folds = report.folds
    tables = []
    for f in folds:
        real = f.methods[0].fidelity
        rows = [
            {
                "label": "Real ratings",
                "cls": "paper",
                "cells": [fmt(real.real_mean, 2), fmt(real.real_var, 2), "0", "0", "–", "–"]
                + [_pct(100 * s) for s in real.real_shares],
            }
        ]
        for m in f.methods:
            if m.variant == "continuous":
                continue
            fd = m.fidelity
            rows.append(
                {
                    "label": m.label,
                    "cls": _cls(m.key),
                    "cells": [
                        fmt(fd.sim_mean, 2),
                        fmt(fd.sim_var, 2),
                        fmt(fd.wasserstein),
                        fmt(fd.kl),
                        f"{fmt(fd.per_user_r)} ({fd.per_user_n})",
                        "–" if math.isnan(fd.positivity_bias) else f"{fd.positivity_bias:+.3f}",
                    ]
                    + [_pct(100 * s) for s in fd.sim_shares],
                }
            )
        tables.append({"fold": f.fold, "rows": rows})
    # Pooled over folds: counts and confusion matrices add up.
    real_counts = np.sum([f.methods[0].fidelity.real_counts for f in folds], axis=0)
    series = {"Real": (real_counts / max(real_counts.sum(), 1)).tolist()}
    heatmaps = []
    for key in [k for k in (SIM_KEY, best_key(folds, "/rounded")) if k is not None]:
        rows_of_key = [r for r in (f.row(key) for f in folds) if r is not None]
        if not rows_of_key:
            continue
        counts = np.sum([r.fidelity.sim_counts for r in rows_of_key], axis=0)
        label = _label(folds, key)
        series[label] = (counts / max(counts.sum(), 1)).tolist()
        confusion = np.sum([r.fidelity.confusion for r in rows_of_key], axis=0)
        heatmaps.append(plots.confusion_heatmap(confusion.tolist(), f"{label}: real × predicted"))
    histogram = plots.rating_histogram(series, "Rating distribution, all scored ratings")
    return {"tables": tables, "histogram": histogram, "heatmaps": heatmaps}


def _rmse_plot(report: Report) -> str:
    folds = report.folds
    series: dict[str, list[float]] = {}
    for key in (SIM_KEY, best_key(folds, "/continuous"), best_key(folds, "/rounded")):
        if key is None or any(f.row(key) is None for f in folds):
            continue
        series[_label(folds, key)] = [r.overall.rmse for f in folds if (r := f.row(key))]
    if report.source != "baselines":
        series["Paper GPT-3.5"] = [PAPER_GPT35.get(f.fold, (math.nan, 0.0))[0] for f in folds]
    return plots.grouped_bars([f.fold for f in folds], series, title="RMSE per fold", ylabel="RMSE")


def usage_rows(report: Report) -> list[list[str]]:
    """LLM calls, tokens and cost per fold, with a total row."""
    rows = [
        [
            u.fold,
            f"{u.n_rated}/{u.n_expected}",
            f"{u.calls:,}",
            f"{u.cache_hits:,}",
            f"{u.prompt_tokens:,}",
            f"{u.cached_tokens:,}",
            f"{u.completion_tokens:,}",
            f"{u.cost_usd:.4f}",
            f"{u.failed_jobs}",
        ]
        for u in report.usage
    ]
    if len(report.usage) > 1:
        us = report.usage
        rows.append(
            [
                "total",
                f"{sum(u.n_rated for u in us)}/{sum(u.n_expected for u in us)}",
                f"{sum(u.calls for u in us):,}",
                f"{sum(u.cache_hits for u in us):,}",
                f"{sum(u.prompt_tokens for u in us):,}",
                f"{sum(u.cached_tokens for u in us):,}",
                f"{sum(u.completion_tokens for u in us):,}",
                f"{sum(u.cost_usd for u in us):.4f}",
                f"{sum(u.failed_jobs for u in us)}",
            ]
        )
    return rows


def render_report(report: Report) -> str:
    """The HTML page of a report."""
    if not report.folds:
        sections: dict[str, Any] = {"empty": True}
    else:
        sections = {
            "empty": False,
            "fold_tables": fold_tables(report),
            "summary_rows": summary_rows(report),
            "rmse_plot": _rmse_plot(report),
            "cold_any": any(f.n_cold_ratings for f in report.folds),
            "cold_header": [
                f"{f.fold} ({f.n_cold_ratings} ratings, {f.n_cold_users} users)"
                for f in report.folds
            ],
            "cold_rows": [
                {
                    "label": label,
                    "cls": _cls(key),
                    "cells": [fmt(r.cold.rmse) if (r := f.row(key)) else "–" for f in report.folds],
                }
                for key, label in row_keys(report.folds)
            ],
            "history": history_section(report),
            "fidelity": fidelity_section(report),
            "bootstrap": bootstrap_lines(report),
        }
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=report.title,
            source=report.source,
            generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            meta=list(report.meta.items()),
            options=report.options,
            notes=report.notes,
            usage=usage_rows(report),
            config_json=None if report.config is None else json.dumps(report.config, indent=2),
            **sections,
        )
    )


def write_html(report: Report, path: Path) -> None:
    """Write the report's HTML page to ``path``."""
    path.write_text(render_report(report), encoding="utf-8")
