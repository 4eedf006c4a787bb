"""Figures 3 and 4: prompt tokens per simulated rating and fidelity, `paper` (one item per
call) against `lusifer` (a chunk per call) on the same users; and how busy the model server was.

Both runs share one local-mode work directory, so the profile calls of the second run may come
from the first run's cache: tokens are counted per call *use*, which is what the method needs.
"""

from __future__ import annotations

import secrets
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.localrun import run_local, token_figures, utilisation_figures
from bench.report import Table, print_table
from tests.integration.services import stub_server

PROMPT_SETS = ("paper", "lusifer")
TARGET_TOKEN_FACTOR = 10.0


def measure_tokens(
    data_dir: Path,
    *,
    users: int,
    fold: str = "u1",
    overview_chars: int = 600,
    use_stub: bool = False,
    prompt_sets: tuple[str, ...] = PROMPT_SETS,
) -> dict[str, Any]:
    """Run each prompt set on the same users; return tokens, fidelity and utilisation."""
    runs: dict[str, Any] = {}
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lusifer-bench-")))
        base_url = stack.enter_context(stub_server()).base_url if use_stub else None
        for name in prompt_sets:
            run = run_local(
                work_dir,
                f"bench-{name}-{secrets.token_hex(3)}",
                data_dir,
                prompt_set=name,
                users=users,
                fold=fold,
                overview_chars=overview_chars,
                base_url=base_url,
            )
            runs[name] = {
                "tokens": token_figures(run, fold),
                "utilisation": utilisation_figures(run),
            }
    figure: dict[str, Any] = {
        "llm": "stub" if use_stub else "local SmolLM2-135M",
        "fold": fold,
        "users": users,
        "overview_chars": overview_chars,
        "runs": runs,
    }
    if "paper" in runs and "lusifer" in runs:
        paper = runs["paper"]["tokens"]["rating_tokens_per_rating"]
        ours = runs["lusifer"]["tokens"]["rating_tokens_per_rating"]
        figure["token_factor"] = paper / ours if ours else 0.0
        figure["close_match_delta_pct"] = (
            runs["lusifer"]["tokens"]["close_match_pct"]
            - runs["paper"]["tokens"]["close_match_pct"]
        )
    return figure


def print_tokens(figure: dict[str, Any]) -> None:
    """Figure 3 as a table, one row per prompt set."""
    table = Table(
        title=f"3. Prompt tokens per simulated rating and fidelity ({figure['llm']}, "
        f"{figure['users']} users of {figure['fold']}, "
        f"overviews ≤ {figure['overview_chars']} chars)"
    )
    for name in ("prompt set", "rated", "calls", "rating tokens/rating", "all tokens/rating"):
        table.add_column(name, justify="right")
    for name in ("cached tokens", "RMSE", "exact %", "close-match %", "coverage"):
        table.add_column(name, justify="right")
    for name, run in figure["runs"].items():
        t = run["tokens"]
        table.add_row(
            name,
            f"{t['rated']}/{t['expected']}",
            str(t["calls"]),
            f"{t['rating_tokens_per_rating']:.0f}",
            f"{t['all_tokens_per_rating']:.0f}",
            str(t["cached_prompt_tokens"]),
            f"{t['rmse']:.3f}",
            f"{t['exact_match_pct']:.1f}",
            f"{t['close_match_pct']:.1f}",
            f"{t['coverage_pct']:.1f} %",
        )
    print_table(table)
    if "token_factor" in figure:
        print_table(
            _single(
                "paper ÷ lusifer rating tokens per rating",
                f"{figure['token_factor']:.1f}x (target ≥ {TARGET_TOKEN_FACTOR:.0f}x); "
                f"close-match lusifer − paper: {figure['close_match_delta_pct']:+.1f} points",
            )
        )


def print_utilisation(figure: dict[str, Any]) -> None:
    """Figure 4 as a table, one row per run."""
    table = Table(title=f"4. Model server utilisation ({figure['llm']}): busy time ÷ wall time")
    for name in ("prompt set", "calls", "busy s", "calls window s", "command s"):
        table.add_column(name, justify="right")
    for name in ("busy ÷ window", "busy ÷ command", "mean latency s"):
        table.add_column(name, justify="right")
    for name, run in figure["runs"].items():
        u = run["utilisation"]
        if not u.get("calls"):
            continue
        table.add_row(
            name,
            str(u["calls"]),
            f"{u['busy_s']:.1f}",
            f"{u['calls_window_s']:.1f}",
            f"{u['command_wall_s']:.1f}",
            f"{100 * u['utilisation_window']:.0f} %",
            f"{100 * u['utilisation_command']:.0f} %",
            f"{u['mean_latency_s']:.3f}",
        )
    print_table(table)


def _single(name: str, value: str) -> Table:
    table = Table(show_header=False)
    table.add_column(name)
    table.add_column("value")
    table.add_row(name, value)
    return table
