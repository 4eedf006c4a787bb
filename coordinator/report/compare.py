"""Two runs side by side (two prompt sets, two models): metrics, fidelity, and a paired CI.

Each run is scored on its own answered ratings; the difference is also measured on the
ratings *both* runs answered, with a paired bootstrap over users, which is the comparison
that a difference in coverage cannot distort. The same baselines are scored on those shared
ratings too (continuous and rounded), so both runs stand next to the classic methods.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from coordinator.database_url import database_url_of
from coordinator.evaluate import EvalOptions, Report, evaluate_run, fold_positions, run_ratings
from coordinator.report import plots
from coordinator.report.as_json import jsonable, report_to_dict
from coordinator.report.eval_tables import fmt, fmt_pm
from coordinator.report.html_page import environment
from lusifer.core.settings import Settings
from lusifer.evaluate.baselines import to_scale
from lusifer.evaluate.folds import SIMULATOR, FoldEvaluation, method_label
from lusifer.evaluate.metrics import RatingMetrics, mean_std, summarize
from lusifer.evaluate.statistics import BootstrapCI, rmse_difference_ci
from lusifer.store.engines import get_engine

SIM_KEY = f"{SIMULATOR}/integer"


@dataclass(frozen=True)
class CommonFold:
    """Both runs on the ratings both answered in one fold."""

    fold: str
    n: int
    n_users: int
    a: RatingMetrics
    b: RatingMetrics
    ci: BootstrapCI  # RMSE(A) - RMSE(B), users resampled
    # Each baseline row (``svd/continuous``, ``svd/rounded``) on the same shared ratings.
    baselines: dict[str, RatingMetrics] = field(default_factory=dict)


@dataclass
class Comparison:
    """Run A, run B, and their paired comparison per shared fold."""

    a: Report
    b: Report
    common: list[CommonFold] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare_runs(
    run_a: str, run_b: str, settings: Settings, options: EvalOptions, progress: Console | None
) -> Comparison:
    """Evaluate both runs and compare them, and the baselines, on the ratings both answered."""
    report_a = evaluate_run(run_a, settings, options, progress)
    report_b = evaluate_run(run_b, settings, options, progress)
    engine = get_engine(database_url_of(settings))
    common = []
    folds_b = {f.fold for f in report_b.folds}
    notes = []
    same_data = report_a.meta.get("dataset fingerprint") == report_b.meta.get("dataset fingerprint")
    if options.methods and not same_data:
        notes.append("the runs use different data: the baselines on shared ratings are left out")
    for fold in [f.fold for f in report_a.folds if f.fold in folds_b]:
        ua, ia, ta, pa = run_ratings(engine, run_a, fold)
        ub, ib, _, pb = run_ratings(engine, run_b, fold)
        in_b = {(u, i): k for k, (u, i) in enumerate(zip(ub.tolist(), ib.tolist(), strict=True))}
        pairs = [
            (k, in_b[(u, i)])
            for k, (u, i) in enumerate(zip(ua.tolist(), ia.tolist(), strict=True))
            if (u, i) in in_b
        ]
        if not pairs:
            continue
        ka, kb = (np.array(side, dtype=np.int64) for side in zip(*pairs, strict=True))
        users, true = ua[ka], ta[ka]
        common.append(
            CommonFold(
                fold=fold,
                n=int(ka.size),
                n_users=int(np.unique(users).size),
                a=summarize(true, pa[ka]),
                b=summarize(true, pb[kb]),
                ci=rmse_difference_ci(
                    true, pa[ka], pb[kb], users, n_resamples=options.n_resamples, seed=options.seed
                ),
                baselines=_baselines_on(report_a, fold, users, ia[ka], true) if same_data else {},
            )
        )
    return Comparison(report_a, report_b, common, notes)


def _baselines_on(
    report: Report,
    fold: str,
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    true: NDArray[np.float64],
) -> dict[str, RatingMetrics]:
    """Every baseline of ``report`` on the given test ratings of a fold."""
    if report.dataset is None or fold not in report.baselines:
        return {}
    positions = fold_positions(report.dataset.folds[fold], users, items)
    scores: dict[str, RatingMetrics] = {}
    for method, full in report.baselines[fold].items():
        scores[f"{method}/continuous"] = summarize(true, full[positions])
        scores[f"{method}/rounded"] = summarize(true, to_scale(full[positions]))
    return scores


def _sim(folds: list[FoldEvaluation]) -> list[RatingMetrics]:
    return [r.overall for f in folds if (r := f.row(SIM_KEY)) is not None]


def _side_rows(cmp: Comparison) -> list[list[str]]:
    """fold, then A and B for RMSE, MAE, exact %, close %, rated."""
    rows = []
    by_fold_b = {f.fold: f for f in cmp.b.folds}
    for fa in cmp.a.folds:
        fb = by_fold_b.get(fa.fold)
        ma, mb = fa.row(SIM_KEY), fb.row(SIM_KEY) if fb else None
        cells = [fa.fold]
        for name, digits in (
            ("rmse", 3),
            ("mae", 3),
            ("exact_match_pct", 1),
            ("close_match_pct", 1),
        ):
            cells += [fmt(getattr(m.overall, name), digits) if m else "–" for m in (ma, mb)]
        cells += [str(fa.n_scored), str(fb.n_scored) if fb else "–"]
        rows.append(cells)
    sa, sb = _sim(cmp.a.folds), _sim(cmp.b.folds)
    if len(cmp.a.folds) > 1:
        cells = ["mean ± std"]
        for name, digits in (
            ("rmse", 3),
            ("mae", 3),
            ("exact_match_pct", 1),
            ("close_match_pct", 1),
        ):
            for side in (sa, sb):
                cells.append(fmt_pm(*mean_std([getattr(m, name) for m in side]), digits))
        rows.append([*cells, "", ""])
    return rows


SIDE_HEADER = [
    "fold", "RMSE A", "RMSE B", "MAE A", "MAE B", "exact % A", "exact % B",
    "close % A", "close % B", "n A", "n B",
]  # fmt: skip
COMMON_HEADER = ["fold", "ratings", "users", "RMSE A", "RMSE B", "A − B", "95 % CI"]
SHARED_HEADER = ["fold", "method", "RMSE", "MAE", "exact %", "close %"]


def _common_rows(cmp: Comparison) -> list[list[str]]:
    return [
        [
            c.fold,
            str(c.n),
            str(c.n_users),
            fmt(c.a.rmse),
            fmt(c.b.rmse),
            "–" if math.isnan(c.ci.estimate) else f"{c.ci.estimate:+.3f}",
            "–" if math.isnan(c.ci.low) else f"[{c.ci.low:+.3f}, {c.ci.high:+.3f}]",
        ]
        for c in cmp.common
    ]


def _shared_rows(cmp: Comparison) -> list[list[str]]:
    """Run A, run B and every baseline on the ratings both runs answered, per fold."""
    rows = []
    for c in cmp.common:
        named = [("Run A", c.a), ("Run B", c.b)] + [
            (method_label(*key.split("/", 1)), m) for key, m in c.baselines.items()
        ]
        for k, (label, m) in enumerate(named):
            rows.append(
                [
                    c.fold if k == 0 else "",
                    label,
                    fmt(m.rmse),
                    fmt(m.mae),
                    fmt(m.exact_match_pct, 1),
                    fmt(m.close_match_pct, 1),
                ]
            )
    return rows


def _meta_rows(cmp: Comparison) -> list[tuple[str, str, str, bool]]:
    keys = list(dict.fromkeys([*cmp.a.meta, *cmp.b.meta]))
    return [
        (k, cmp.a.meta.get(k, "–"), cmp.b.meta.get(k, "–"), cmp.a.meta.get(k) != cmp.b.meta.get(k))
        for k in keys
    ]


def print_comparison(console: Console, cmp: Comparison) -> None:
    """The side-by-side tables on the terminal."""
    meta = Table(title="A and B", title_justify="left")
    for name in ("", "A", "B"):
        meta.add_column(name)
    for key, a, b, differs in _meta_rows(cmp):
        meta.add_row(key, a, b, style="bold" if differs else "dim")
    console.print(meta)
    for title, header, rows in (
        ("Each run on its own answered ratings", SIDE_HEADER, _side_rows(cmp)),
        ("On the ratings both runs answered", COMMON_HEADER, _common_rows(cmp)),
        ("Both runs and the baselines on those ratings", SHARED_HEADER, _shared_rows(cmp)),
    ):
        table = Table(title=title, title_justify="left")
        for k, name in enumerate(header):
            table.add_column(name, justify="left" if k == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _histogram_and_maps(cmp: Comparison) -> tuple[str, list[str]]:
    series: dict[str, list[float]] = {}
    maps = []
    for name, report in (("A", cmp.a), ("B", cmp.b)):
        rows = [r for f in report.folds if (r := f.row(SIM_KEY)) is not None]
        if not rows:
            continue
        real = np.sum([r.fidelity.real_counts for r in rows], axis=0)
        sim = np.sum([r.fidelity.sim_counts for r in rows], axis=0)
        series.setdefault(f"Real ({name}'s ratings)", (real / max(real.sum(), 1)).tolist())
        series[f"Run {name}"] = (sim / max(sim.sum(), 1)).tolist()
        confusion = np.sum([r.fidelity.confusion for r in rows], axis=0).tolist()
        maps.append(plots.confusion_heatmap(confusion, f"Run {name}: real × simulated"))
    return plots.rating_histogram(series, "Rating distribution"), maps


def render_comparison(cmp: Comparison) -> str:
    """The HTML page of a comparison."""
    histogram, maps = _histogram_and_maps(cmp)
    return (
        environment()
        .get_template("compare.html.j2")
        .render(
            title=f"Lusifer: {cmp.a.meta.get('run', 'A')} vs {cmp.b.meta.get('run', 'B')}",
            generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            meta=_meta_rows(cmp),
            side_header=SIDE_HEADER,
            side_rows=_side_rows(cmp),
            common_header=COMMON_HEADER,
            common_rows=_common_rows(cmp),
            shared_header=SHARED_HEADER,
            shared_rows=_shared_rows(cmp),
            options=cmp.a.options,
            histogram=histogram,
            heatmaps=maps,
            notes=[f"A: {n}" for n in cmp.a.notes] + [f"B: {n}" for n in cmp.b.notes] + cmp.notes,
        )
    )


def comparison_to_dict(cmp: Comparison) -> dict[str, Any]:
    """Both reports and the paired comparison as JSON-ready data."""
    common = [{**dataclasses.asdict(c), "ci": dataclasses.asdict(c.ci)} for c in cmp.common]
    result: dict[str, Any] = jsonable(
        {
            "a": report_to_dict(cmp.a),
            "b": report_to_dict(cmp.b),
            "common": common,
            "notes": cmp.notes,
        }
    )
    return result


def write_comparison(cmp: Comparison, html: Path | None, json_path: Path | None) -> None:
    """Write the comparison's HTML page and/or JSON file."""
    if html is not None:
        html.write_text(render_comparison(cmp), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(json.dumps(comparison_to_dict(cmp), indent=2) + "\n", encoding="utf-8")
