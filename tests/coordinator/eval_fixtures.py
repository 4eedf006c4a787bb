"""A stored run over real MovieLens u1 test ratings, without any LLM, and a small generic CSV
dataset: for evaluation tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sqlmodel import Session

from lusifer.core.config import RunConfig, parse_run_config
from lusifer.core.settings import Settings
from lusifer.data import ColumnMapping, Dataset, load_csv_dataset, load_movielens_100k
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.tables import Run, SimulatedRating

RUN_ID = "eval-test-run"
USERS = (1, 2, 3, 13)  # user 13 has many ratings; 1..3 fewer: several history buckets


def simulated(user: int, item: int, true: int) -> int | None:
    """A made-up, deterministic simulator: kind to some users, missing some answers."""
    if (user + item) % 11 == 0:
        return None  # unanswered, like a failed job
    return min(5, true + 1) if (user + item) % 3 == 0 else true


def finished_run(run_id: str, config: RunConfig, fingerprint: str) -> Run:
    """The row of a finished run made with the `lusifer` prompt set."""
    return Run(
        id=run_id,
        config_json=config.model_dump_json(),
        prompt_set="lusifer",
        prompt_version="1",
        prompt_hash="0123456789abcdef",
        prompts_json="{}",
        dataset_fingerprint=fingerprint,
        status="done",
    )


def store_run(data_dir: Path, tmp_path: Path, run_id: str = RUN_ID) -> Settings:
    """Store a run with simulated ratings for USERS of u1 in a fresh SQLite database."""
    url = f"sqlite:///{tmp_path / 'eval.db'}"
    engine = get_engine(url)
    create_tables(engine)
    config = parse_run_config(
        {
            "dataset": {"data_dir": data_dir / "ml-100k"},
            "folds": ["u1"],
            "users": list(USERS),
            "llm": {"base_url": "local", "model": "fake-model"},
        }
    )
    fold = load_movielens_100k(data_dir / "ml-100k", None, folds=("u1",)).folds["u1"]
    with Session(engine) as session:
        session.add(finished_run(run_id, config, "f" * 64))
        for r in fold.test:
            if r.user_id in USERS:
                session.add(
                    SimulatedRating(
                        run_id=run_id,
                        fold="u1",
                        user_id=r.user_id,
                        item_id=r.item_id,
                        true_rating=r.rating,
                        rating=simulated(r.user_id, r.item_id, r.rating),
                        job_id=f"{run_id}/u1/{r.user_id}/rating",
                    )
                )
        session.commit()
    return Settings(database_url=url, cache_dir=tmp_path / "cache")


def write_csv_dataset(root: Path) -> Dataset:
    """40 users x 60 items, about half rated: user and item effects plus noise."""
    rng = np.random.default_rng(7)
    ratings, items = root / "ratings.csv", root / "items.csv"
    with items.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title"])
        for i in range(1, 61):
            writer.writerow([i, f"Item {i}"])
    user_bias, item_bias = rng.normal(0, 0.6, 41), rng.normal(0, 0.8, 61)
    with ratings.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        for u in range(1, 41):
            for i in range(1, 61):
                if rng.random() < 0.5:
                    noise = rng.normal(0, 0.7)
                    value = np.clip(np.rint(3.4 + user_bias[u] + item_bias[i] + noise), 1, 5)
                    writer.writerow([u, i, int(value), int(rng.integers(10**9, 2 * 10**9))])
    return load_csv_dataset(ratings, items, columns=ColumnMapping(), n_folds=5, name="ratings")
