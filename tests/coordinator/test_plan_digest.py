"""What a plan stores, pinned byte for byte: fold contents, fingerprints, job rows, expected
ratings and dry-run estimates, over MovieLens 100K u1..u5 and a seeded k-fold CSV dataset.

The digests were taken with the planner of before the columnar folds and the streamed plan
(issue 16): how a plan is built may change, what it stores and so every run id may not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from coordinator.estimate import estimate_plan
from coordinator.plan import describe_plan, plan_run, store_plan
from lusifer.core.columns import ColumnMapping
from lusifer.core.config import RunConfig
from lusifer.data import Dataset, load_csv_dataset, load_movielens_100k
from lusifer.data.frames import FrameColumns
from lusifer.data.from_frames import fold_dataset, load_frames, pairs_to_simulate
from lusifer.data.model import Fold
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine

ML_FOLDS = ("u1", "u2", "u3", "u4", "u5")
CSV_FOLDS = ("f1", "f2", "f3", "f4", "f5")

# sha256 of each part, computed with the planner of before (see the module docstring).
PINNED = {
    "ml100k-folds": "d8fef01a4ad1c4e4c257dac23313304949b1a8b9ee67cf9f53df23e28520f9cf",
    "ml100k-all": "19ca0c1875ae620e5095a66d7d19548ce251d3a2089892d31b7564f63da6a04b",
    "ml100k-paper-subset": "cb2ee4b1ece88f72e9f5361ed3aabe15829ece6413f115618b44d6307fa3a5c8",
    "ml100k-users": "9396bdd92aa9babdd05c6f893c26c1d32abef5084757588c3b12c8aad5256265",
    "ml100k-estimate": "6aa012e2f304b951eba2e3f5e035e664205cc04937f848cafd69f0f25777f4c6",
    "csv-folds": "47d7d076bb81bed83ff0e2f71c2864ae5f2caec52166a790e3b08b294993b891",
    "csv-all": "9e5952985d89596091a9c8c68f601d0a81a528fe6022c751f3d56f76f906224b",
    "frames-rate": "0a736b6e83b18728b603b5ed17e5bbe742bcc079538907b45627576e51f99fd6",
}


def _digest(lines: Iterable[object]) -> str:
    hasher = hashlib.sha256()
    for line in lines:
        hasher.update(repr(line).encode())
        hasher.update(b"\n")
    return hasher.hexdigest()


def _check(name: str, digest: str) -> None:
    # The whole digest in the message: a deliberate change of what plans store re-pins it.
    assert digest == PINNED[name], f"{name}: {digest}"


def _fold_rows(fold: Fold) -> Iterable[object]:
    for part in (fold.train, fold.test):
        yield len(part)
        yield from ((r.user_id, r.item_id, r.rating, r.timestamp) for r in part)


def _folds_digest(dataset: Dataset) -> str:
    def lines() -> Iterable[object]:
        yield dataset.name, dataset.fingerprint, sorted(dataset.folds)
        for name in sorted(dataset.folds):
            yield name
            yield from _fold_rows(dataset.folds[name])

    return _digest(lines())


def _stored_digest(tmp_path: Path, run_id: str, config: RunConfig, dataset: Dataset) -> str:
    """Plan and store into a fresh SQLite file; the digest of every row the plan wrote."""
    engine = get_engine(f"sqlite:///{tmp_path / f'{run_id}.db'}")
    create_tables(engine)
    plan = plan_run(run_id, config, dataset, load_prompt_set(config.prompt_set))
    store_plan(engine, plan, dataset)
    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT id, config_json, prompt_hash, dataset_fingerprint, status FROM run")
        ).all()
        jobs = conn.execute(
            text(
                "SELECT id, run_id, fold, user_id, kind, chunk, state, depends_on, waiting, "
                "inputs_json FROM job ORDER BY id"
            )
        ).all()
        expected = conn.execute(
            text(
                "SELECT run_id, fold, user_id, item_id, true_rating, rating, job_id "
                "FROM simulatedrating ORDER BY run_id, fold, user_id, item_id"
            )
        ).all()
    engine.dispose()
    return _digest(
        [describe_plan(plan), *map(tuple, run), *map(tuple, jobs), *map(tuple, expected)]
    )


def _config(**changes: object) -> RunConfig:
    base: dict[str, object] = {"llm": {"base_url": "http://x/v1", "model": "m"}}
    base.update(changes)
    return RunConfig.model_validate(base)


@pytest.fixture
def movielens(data_dir: Path) -> Dataset:
    overviews = data_dir / "tmdb" / "ml-100k_movies_tmdb.csv"
    return load_movielens_100k(data_dir / "ml-100k", overviews, folds=ML_FOLDS)


def _write_csv(root: Path) -> tuple[Path, Path, Path]:
    """A seeded dataset of 60 users and 80 items in the CSV triple a user brings."""
    rng = np.random.default_rng(7)
    rows = []
    for user in range(1, 61):
        items = rng.choice(np.arange(1, 81), size=int(rng.integers(8, 40)), replace=False)
        # Few distinct timestamps: ties, broken by item id, are part of what is pinned.
        stamps = rng.integers(900_000_000, 900_000_020, size=len(items))
        rows += [
            (user, int(i), int(rng.integers(1, 6)), int(t))
            for i, t in zip(items, stamps, strict=True)
        ]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items_df = pd.DataFrame(
        {
            "item_id": range(1, 81),
            "title": [f"Film {i} (19{50 + i % 50})" for i in range(1, 81)],
            "genres": ["Drama|Comedy" if i % 2 else "Horror" for i in range(1, 81)],
        }
    )
    users_df = pd.DataFrame({"user_id": range(1, 61), "age": [20 + u % 40 for u in range(1, 61)]})
    paths = (root / "ratings.csv", root / "items.csv", root / "users.csv")
    for frame, path in zip((ratings, items_df, users_df), paths, strict=True):
        frame.to_csv(path, index=False)
    return paths


@pytest.fixture(scope="module")
def csv_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _write_csv(tmp_path_factory.mktemp("csv"))


def _csv_dataset(paths: tuple[Path, Path, Path]) -> Dataset:
    return load_csv_dataset(*paths, columns=ColumnMapping(age="age"), n_folds=5, seed=3)


def test_movielens_folds_and_fingerprint(movielens: Dataset) -> None:
    _check("ml100k-folds", _folds_digest(movielens))


def test_movielens_whole_plan(movielens: Dataset, tmp_path: Path) -> None:
    config = _config(folds=ML_FOLDS)
    _check("ml100k-all", _stored_digest(tmp_path, "all", config, movielens))


def test_movielens_paper_subset(movielens: Dataset, tmp_path: Path) -> None:
    config = _config(folds=("u2", "u4"), max_users=40, prompt_set="paper")
    found = _stored_digest(tmp_path, "paper", config, movielens)
    _check("ml100k-paper-subset", found)


def test_movielens_named_users(movielens: Dataset, tmp_path: Path) -> None:
    config = _config(folds=ML_FOLDS, users=(942, 3, 7, 500, 13), chunk_size=4, recent_k=3)
    _check("ml100k-users", _stored_digest(tmp_path, "users", config, movielens))


def test_movielens_dry_run_estimate(movielens: Dataset) -> None:
    config = _config(folds=("u1", "u3"), max_users=25)
    prompts = load_prompt_set("lusifer")
    estimates = estimate_plan(plan_run("e", config, movielens, prompts), config, movielens, prompts)
    lines = [
        (f, sorted(e.jobs.items()), e.calls, e.prompt_tokens, e.completion_tokens)
        for f, e in estimates.items()
    ]
    _check("ml100k-estimate", _digest(lines))


def test_csv_folds_and_plan(csv_paths: tuple[Path, Path, Path], tmp_path: Path) -> None:
    dataset = _csv_dataset(csv_paths)
    folds = _folds_digest(dataset)
    found = _stored_digest(tmp_path, "csv", _config(folds=CSV_FOLDS), dataset)
    _check("csv-folds", folds)
    _check("csv-all", found)


def test_dataframes_rate_plan(csv_paths: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ratings = pd.read_csv(csv_paths[0])
    held_out = ratings.groupby("user_id").tail(2)
    data = load_frames(
        ratings.drop(held_out.index),
        pd.read_csv(csv_paths[1]),
        pd.read_csv(csv_paths[2]),
        FrameColumns(age="age"),
    )
    test = pairs_to_simulate(data, held_out)
    dataset = fold_dataset(data, test, fold="api")
    found = _stored_digest(tmp_path, "frames", _config(folds=("api",)), dataset)
    _check("frames-rate", _digest([_folds_digest(dataset), found]))
