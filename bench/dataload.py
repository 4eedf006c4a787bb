"""Load time and peak memory of the generic CSV/Parquet dataset path (issue 14).

``python -m bench.dataload`` writes two datasets into a temporary directory and loads each in
a fresh process (so peak RSS is the loader's own): MovieLens 100K as a ratings/items CSV pair
(from ``--data-dir``), and a synthetic file of ``--ratings`` ratings (1,000,000 by default) as
CSV and as Parquet. It prints seconds and peak RSS per file; nothing is stored in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from lusifer.data import ColumnMapping, load_csv_dataset
ratings, items = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
dataset = load_csv_dataset(ratings, items, columns=ColumnMapping(), n_folds=5)
seconds = time.perf_counter() - start
n = sum(len(f.test) for f in dataset.folds.values())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "ratings": n, "peak_rss_mb": rss}))
"""


def write_movielens_csv(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """u.data and u.item of MovieLens 100K as a headed ratings CSV and items CSV."""
    ml = data_dir / "ml-100k" if (data_dir / "ml-100k").is_dir() else data_dir
    table = np.loadtxt(ml / "u.data", dtype=np.int64, delimiter="\t")
    ratings = out / "ml100k-ratings.csv"
    header = "user_id,item_id,rating,timestamp"
    np.savetxt(ratings, table, fmt="%d", delimiter=",", header=header, comments="")
    items = out / "ml100k-items.csv"
    lines = (ml / "u.item").read_text(encoding="latin-1").splitlines()
    with items.open("w", encoding="utf-8") as handle:
        handle.write("item_id,title\n")
        for line in lines:
            fields = line.split("|")
            title = fields[1].replace('"', '""')
            handle.write(f'{fields[0]},"{title}"\n')
    return ratings, items


def write_synthetic(out: Path, n_ratings: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """``n_ratings`` distinct (user, item) ratings over 20,000 users and 5,000 items."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 20_000, 5_000
    pairs = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    table = np.column_stack(
        [
            pairs // n_items + 1,
            pairs % n_items + 1,
            rng.integers(1, 6, n_ratings),
            rng.integers(800_000_000, 900_000_000, n_ratings),
        ]
    )
    ratings = out / "synthetic-ratings.csv"
    header = "user_id,item_id,rating,timestamp"
    np.savetxt(ratings, table, fmt="%d", delimiter=",", header=header, comments="")
    items = out / "synthetic-items.csv"
    items.write_text("item_id,title\n" + "".join(f"{i},Item {i}\n" for i in range(1, n_items + 1)))
    parquet = out / "synthetic-ratings.parquet"
    try:
        import pandas as pd

        columns = ["user_id", "item_id", "rating", "timestamp"]
        pd.DataFrame(table, columns=columns).to_parquet(parquet)
    except ImportError:  # the loader before pandas: no Parquet to measure
        parquet = Path()
    return ratings, items, parquet


def measure(ratings: Path, items: Path) -> dict[str, float]:
    """Load one dataset in a fresh interpreter; its seconds and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ratings), str(items)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    if done.returncode != 0:
        return {"error": 1.0, "seconds": float("nan"), "peak_rss_mb": float("nan")}
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Print the load time and peak RSS of each file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("LUSIFER_DATA_DIR"))
    parser.add_argument("--ratings", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lusifer-dataload-") as tmp:
        out = Path(tmp)
        cases: list[tuple[str, Path, Path]] = []
        if args.data_dir:
            cases.append(("ml-100k csv", *write_movielens_csv(Path(args.data_dir), out)))
        ratings, items, parquet = write_synthetic(out, args.ratings)
        cases.append((f"synthetic {args.ratings:,} csv", ratings, items))
        if parquet != Path():
            cases.append((f"synthetic {args.ratings:,} parquet", parquet, items))
        print(f"{'dataset':<28} {'seconds':>8} {'peak RSS MB':>12}")
        for name, ratings_path, items_path in cases:
            started = time.perf_counter()
            figures = measure(ratings_path, items_path)
            wall = time.perf_counter() - started
            print(
                f"{name:<28} {figures['seconds']:8.2f} {figures['peak_rss_mb']:12.0f}"
                f"   (process {wall:.1f} s)"
            )


if __name__ == "__main__":
    main()
