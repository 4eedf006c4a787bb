"""The machine-readable form of a report: the same numbers as the tables and the page.

NaN (undefined: an empty slice, a constant answer) is written as ``null`` so the file is
strict JSON that any reader accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.evaluate import Report
from lusifer.evaluate.folds import PAPER_GPT35, FoldEvaluation, across_folds

SCHEMA_VERSION = 1


def jsonable(value: Any) -> Any:
    """Plain data with NaN and infinities as None."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _fold(f: FoldEvaluation, report: Report) -> dict[str, Any]:
    data = dataclasses.asdict(f)
    for method, row in zip(data["methods"], f.methods, strict=True):
        method["label"] = row.label
        method["fidelity"]["real_shares"] = row.fidelity.real_shares
        method["fidelity"]["sim_shares"] = row.fidelity.sim_shares
    usage = next((u for u in report.usage if u.fold == f.fold), None)
    data["usage"] = None
    if usage is not None:
        data["usage"] = dataclasses.asdict(usage)
        del data["usage"]["metrics"]  # the simulator row holds them
        data["usage"]["coverage_pct"] = usage.coverage_pct
    paper = PAPER_GPT35.get(f.fold)
    data["paper_gpt35"] = None if paper is None else {"rmse": paper[0], "close_match_pct": paper[1]}
    return data


def report_to_dict(report: Report) -> dict[str, Any]:
    """Everything in the report as plain JSON-ready data."""
    summary = across_folds(report.folds)
    labels = {m.key: m.label for f in report.folds for m in f.methods}
    data: dict[str, Any] = jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "title": report.title,
            "source": report.source,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "meta": report.meta,
            "options": {
                **dataclasses.asdict(report.options),
                "bootstrap_unit": "users",
                "bootstrap_level": 0.95,
                "bootstrap_compares": "simulator minus the lowest-RMSE baseline row",
            },
            "notes": report.notes,
            "folds": [_fold(f, report) for f in report.folds],
            "across_folds": {
                key: {
                    "label": labels[key],
                    **{name: {"mean": m, "std": s} for name, (m, s) in metrics.items()},
                }
                for key, metrics in summary.items()
            },
            "paper_gpt35": {
                fold: {"rmse": rmse, "close_match_pct": close}
                for fold, (rmse, close) in PAPER_GPT35.items()
            },
            "config": report.config,
        }
    )
    return data


def write_json(report: Report, path: Path) -> None:
    """Write the report's JSON to ``path``."""
    path.write_text(json.dumps(report_to_dict(report), indent=2) + "\n", encoding="utf-8")
