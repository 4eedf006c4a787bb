"""The HTML report: self-contained, every section present, and it renders in Chromium."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coordinator.aggregate import FoldResult
from coordinator.evaluate import EvalOptions, Report
from coordinator.report.compare import compare_runs, comparison_to_dict, render_comparison
from coordinator.report.html_page import render_report
from lusifer.data import Fold, Rating
from lusifer.evaluate.folds import SIMULATOR, evaluate_fold
from lusifer.evaluate.metrics import summarize
from tests.coordinator.eval_fixtures import RUN_ID, store_run

CHROMIUM = Path("/usr/bin/chromium")
OPTIONS = EvalOptions(methods=("global_mean", "svd"), n_resamples=100)


def _fold(name: str, seed: int) -> tuple[Fold, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for user in range(1, 31):
        for k in range(5 + 8 * user):  # histories from 13 to 245 ratings
            train.append(Rating(user, 1000 + k, int(rng.integers(1, 6)), k))
        for k in range(6):
            test.append(Rating(user, k + 1, int(rng.integers(1, 6)), 0))
    true = np.array([r.rating for r in test], dtype=float)
    users = np.array([r.user_id for r in test])
    preds = {
        SIMULATOR: np.clip(true + rng.integers(-2, 3, true.size), 1, 5),
        "svd": np.clip(true + rng.normal(0, 0.9, true.size), 1, 5),
        "global_mean": np.full(true.size, 3.2),
    }
    return Fold.of(name, train, test), preds, users, true


def _report(meta_extra: dict[str, str] | None = None) -> Report:
    folds, usage = [], []
    for k, name in enumerate(("u1", "u2")):
        fold, preds, users, true = _fold(name, k)
        folds.append(evaluate_fold(fold, users, true, preds, n_resamples=100))
        usage.append(
            FoldResult(
                name,
                summarize(true, preds[SIMULATOR]),
                200,
                180,
                42,
                3,
                1,
                0,
                51234,
                4321,
                0.0123,
                2,
            )
        )
    meta = {"run": "run-x", "prompt-set hash": "0123456789abcdef", **(meta_extra or {})}
    return Report(
        title="Lusifer run run-x",
        source="run",
        folds=folds,
        options=OPTIONS,
        meta=meta,
        usage=usage,
        config={"folds": ["u1", "u2"], "llm": {"model": "fake"}},
    )


def _images(html: str) -> list[bytes]:
    marker = 'src="data:image/png;base64,'
    chunks = html.split(marker)[1:]
    return [base64.b64decode(chunk.split('"', 1)[0]) for chunk in chunks]


def test_the_page_is_self_contained() -> None:
    html = render_report(_report())
    assert "<script" not in html and "<link" not in html
    assert 'src="http' not in html and "url(" not in html
    images = _images(html)
    # RMSE per fold, RMSE by history, rating histogram, two confusion heat maps.
    assert len(images) == 5
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(png)).size[0] > 200


def test_the_page_shows_every_section() -> None:
    html = render_report(_report())
    for text in (
        "Simulator against the best baseline",
        "Accuracy per fold",
        "Across folds: mean ± std",
        "Paper GPT-3.5 (published, all users)",
        "1.33",
        "75.82",
        "Cold start: users with fewer than 20 training ratings",
        "RMSE by length of the user",
        "Behavioural fidelity",
        "LLM cost and tokens",
        "51,234",
        "0123456789abcdef",
        "Run configuration",
        "SVD (rounded)",
        "Global mean",
    ):
        assert text in html, text


def test_data_text_is_escaped() -> None:
    html = render_report(_report({"model": "<script>alert(1)</script>"}))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_empty_report_renders() -> None:
    empty = Report(title="nothing", source="run", folds=[], options=OPTIONS, notes=["u1: none"])
    html = render_report(empty)
    assert "No fold has scored ratings yet." in html and "u1: none" in html


def test_comparison_page_and_json(data_dir: Path, tmp_path: Path) -> None:
    settings = store_run(data_dir, tmp_path)
    store_run(data_dir, tmp_path, run_id="other-run")
    options = EvalOptions(methods=(), n_resamples=50)
    cmp = compare_runs(RUN_ID, "other-run", settings, options, None)
    (common,) = cmp.common
    assert common.ci.estimate == 0.0 and common.a == common.b
    html = render_comparison(cmp)
    assert RUN_ID in html and "other-run" in html
    assert "On the ratings both runs answered" in html
    assert len(_images(html)) == 3  # histogram and one heat map per run
    text = json.dumps(comparison_to_dict(cmp))
    assert "NaN" not in text and json.loads(text)["common"][0]["n"] == common.n


def screenshot(html_file: Path, png: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    """Open a page in headless Chromium and save a 1280x2000 screenshot."""
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1280,2000",
            html_file.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install chromium"
)
def test_the_page_opens_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(_report()), encoding="utf-8")
    png = tmp_path / "report.png"
    result = screenshot(page, png, tmp_path / "profile")
    assert png.is_file(), result.stderr[-2000:]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 30_000
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2000)
    # Text, tables and plots: far more than a blank or an error page's handful of colours.
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 200
