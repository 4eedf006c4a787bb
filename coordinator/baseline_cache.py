"""Baseline predictions for a fold's whole test set, computed once and kept on disk.

A report only needs the baselines on the ratings the simulator answered, but fitting is
what costs (SVD++ takes half a minute per fold), so each method predicts the whole test set
of a fold once; any report, comparison or CSV score of that fold then looks its pairs up.
The key is a hash of the fold's ratings, the method, its version and the seed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from rich.console import Console

from lusifer.data import Fold
from lusifer.evaluate.baseline_jobs import fold_digest
from lusifer.evaluate.baselines import BASELINE_VERSION, BASELINES, fold_predictions


def cached_predictions(
    fold: Fold,
    methods: Sequence[str],
    *,
    seed: int,
    cache_dir: Path | None,
    progress: Console | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Continuous predictions of each method for the fold's test ratings, in test order."""
    digest = fold_digest(fold) if cache_dir is not None else ""
    out: dict[str, NDArray[np.float64]] = {}
    for method in methods:
        path = None
        if cache_dir is not None:
            path = cache_dir / f"{digest}-{method}-v{BASELINE_VERSION}-s{seed}.npy"
            if path.is_file():
                cached = np.load(path)
                if cached.shape == (len(fold.test),):
                    out[method] = cached.astype(np.float64)
                    continue
        started = time.perf_counter()
        out[method] = fold_predictions(fold, method, seed=seed)
        if progress is not None:
            progress.print(
                f"  {fold.name}: {BASELINES[method].label} fitted in "
                f"{time.perf_counter() - started:.1f} s",
                highlight=False,
            )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(scratch, out[method])
            os.replace(scratch, path)  # atomic: a concurrent reader sees all or nothing
    return out
