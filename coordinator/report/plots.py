"""The report's plots, drawn with matplotlib's Agg canvas and embedded as PNG data URIs.

``matplotlib.figure.Figure`` is used directly rather than ``pyplot``: no global figure
state, no GUI backend, nothing that needs a display.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

STARS = ("1", "2", "3", "4", "5")
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    # No timestamp or software tag in the file: the same numbers give the same bytes.
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "",
    percent: bool = False,
) -> str:
    """Bars of several series side by side for each group; NaN bars are left out."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=float) * (100.0 if percent else 1.0)
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(x + offset, v, width, label=label, color=PALETTE[k % len(PALETTE)])
    ax.set_xticks(x, list(groups))
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _data_uri(fig)


def rating_histogram(series: Mapping[str, Sequence[float]], title: str) -> str:
    """Share of ratings on each star for real and simulated ratings."""
    return grouped_bars(
        STARS, series, title=title, ylabel="share of ratings (%)", xlabel="stars", percent=True
    )


def confusion_heatmap(matrix: Sequence[Sequence[int]], title: str) -> str:
    """Real (rows) by simulated (columns) counts, coloured by share of each real star's row."""
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(counts.shape[0]):
        for c in range(counts.shape[1]):
            ax.text(
                c,
                r,
                f"{int(counts[r, c])}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[r, c] > 0.55 else "black",
            )
    ax.set_xticks(range(5), STARS)
    ax.set_yticks(range(5), STARS)
    ax.set_xlabel("simulated")
    ax.set_ylabel("real")
    ax.set_title(title, fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the real star's row")
    return _data_uri(fig)


def history_lines(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], counts: Sequence[int]
) -> str:
    """RMSE by history-length bucket, one line per method, bucket sizes on the axis."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    for k, (label, values) in enumerate(series.items()):
        ax.plot(x, values, marker="o", label=label, color=PALETTE[k % len(PALETTE)])
    ax.set_xticks(x, [f"{label}\n(n={n})" for label, n in zip(labels, counts, strict=True)])
    ax.set_xlabel("training ratings of the user")
    ax.set_ylabel("RMSE")
    ax.set_title("RMSE by length of the user's history", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _data_uri(fig)
