"""Evaluations a reviewer trusts: a run, a CSV of simulated ratings, or the baselines alone.

Each flow finds the ratings to score, looks up every baseline's predictions for exactly
those ratings (``baseline_source``: the workers, the database or this process), and hands
them to the kernel's ``evaluate_fold``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from coordinator.aggregate import FoldResult, aggregate_run
from coordinator.baseline_source import FoldBaselines, baseline_predictions
from coordinator.database_url import database_url_of
from coordinator.datasets import load_dataset
from coordinator.runner import stored_config
from lusifer.core.errors import DataError
from lusifer.core.settings import Settings
from lusifer.data import Dataset, Fold
from lusifer.data.simulated_csv import read_simulated_csv
from lusifer.evaluate.baselines import BASELINES
from lusifer.evaluate.folds import SIMULATOR, FoldEvaluation, evaluate_fold
from lusifer.evaluate.slices import DEFAULT_COLD_K
from lusifer.store.engines import get_engine
from lusifer.store.tables import Run, SimulatedRating

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class EvalOptions:
    """Which baselines, the cold-start threshold and the bootstrap's size and seed."""

    methods: tuple[str, ...] = tuple(BASELINES)
    cold_k: int = DEFAULT_COLD_K
    n_resamples: int = 1000
    seed: int = 0


@dataclass
class Report:
    """What the tables, the JSON file and the HTML page show."""

    title: str
    source: str  # run | csv | baselines
    folds: list[FoldEvaluation]
    options: EvalOptions
    meta: dict[str, str] = field(default_factory=dict)
    usage: list[FoldResult] = field(default_factory=list)
    config: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # What the comparison of two runs reuses: the data and every baseline's full-test
    # predictions per fold (not written to the JSON file).
    dataset: Dataset | None = None
    baselines: dict[str, dict[str, Floats]] = field(default_factory=dict)


def fold_positions(
    fold: Fold, users: NDArray[np.int64], items: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Index into ``fold.test`` of each pair; -1 where the pair is not a test rating."""
    return fold.test.positions(users, items)


def _score(
    fold: Fold,
    positions: NDArray[np.int64],
    sim: Floats | None,
    options: EvalOptions,
    baselines: dict[str, Floats],
) -> FoldEvaluation:
    """Score the simulator (if any) and each baseline's full-test predictions at ``positions``."""
    users = fold.test.user_ids[positions].astype(np.int64)
    true = fold.test.ratings[positions].astype(np.float64)
    predictions: dict[str, Floats] = {} if sim is None else {SIMULATOR: sim}
    predictions.update({m: p[positions] for m, p in baselines.items()})
    return evaluate_fold(
        fold,
        users,
        true,
        predictions,
        cold_k=options.cold_k,
        n_resamples=options.n_resamples,
        seed=options.seed,
    )


def fold_baselines(
    dataset: Dataset,
    folds: list[str],
    options: EvalOptions,
    settings: Settings,
    engine: Engine | None,
    progress: Console | None,
) -> FoldBaselines:
    """Each baseline's predictions of the folds' whole test sets (``baseline_source``)."""
    return baseline_predictions(
        [dataset.folds[name] for name in folds],
        dataset.fingerprint,
        options.methods,
        seed=options.seed,
        settings=settings,
        engine=engine,
        progress=progress,
    )


def _baselines_meta(source: FoldBaselines, options: EvalOptions) -> dict[str, str]:
    return {"baseline predictions": source.source} if options.methods else {}


def run_ratings(
    engine: Engine, run_id: str, fold: str
) -> tuple[NDArray[np.int64], NDArray[np.int64], Floats, Floats]:
    """Users, items, true and simulated ratings a run answered in a fold, by user and item."""
    with Session(engine) as session:
        rows = session.exec(
            select(
                SimulatedRating.user_id,
                SimulatedRating.item_id,
                SimulatedRating.true_rating,
                SimulatedRating.rating,
            )
            .where(
                SimulatedRating.run_id == run_id,
                SimulatedRating.fold == fold,
                col(SimulatedRating.rating).is_not(None),
            )
            .order_by(col(SimulatedRating.user_id), col(SimulatedRating.item_id))
        ).all()
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return (
        table[:, 0].astype(np.int64),
        table[:, 1].astype(np.int64),
        table[:, 2],
        table[:, 3],
    )


def _run_meta(run: Run, config: dict[str, Any]) -> dict[str, str]:
    llm = config.get("llm", {})
    users = config.get("users")
    return {
        "run": run.id,
        "status": run.status,
        "created": f"{run.created_at:%Y-%m-%d %H:%M} UTC",
        "model": str(llm.get("model")),
        "endpoint": str(llm.get("base_url")),
        "temperature": str(llm.get("temperature")),
        "prompt set": f"{run.prompt_set} v{run.prompt_version}",
        "prompt-set hash": run.prompt_hash,
        "dataset fingerprint": run.dataset_fingerprint[:16],
        "folds": ", ".join(config.get("folds", [])),
        "users": ", ".join(map(str, users))
        if users
        else (f"first {config['max_users']}" if config.get("max_users") else "all"),
    }


def evaluate_run(
    run_id: str, settings: Settings, options: EvalOptions, progress: Console | None = None
) -> Report:
    """Score a stored run and every baseline on the ratings the run answered."""
    config = stored_config(settings, run_id)
    engine = get_engine(database_url_of(settings))
    with Session(engine) as session:
        run = session.get(Run, run_id)
    assert run is not None  # stored_config checked it
    dataset = load_dataset(config)
    usage = aggregate_run(engine, run_id, config.folds)
    answered: dict[str, tuple[NDArray[np.int64], Floats]] = {}
    notes = []
    for name in config.folds:
        users, items, stored_true, sim = run_ratings(engine, run_id, name)
        fold = dataset.folds[name]
        positions = fold_positions(fold, users, items)
        true = fold.test.ratings[positions].astype(np.float64)
        if np.any(positions < 0) or not np.array_equal(true, stored_true):
            raise DataError(
                f"run {run_id!r} fold {name}: stored test ratings differ from the dataset's; "
                "point the run at the data it was made with"
            )
        if positions.size == 0:
            notes.append(f"{name}: no simulated rating yet; the fold is left out")
            continue
        answered[name] = (positions, sim)
    baselines = fold_baselines(dataset, list(answered), options, settings, engine, progress)
    folds = [
        _score(dataset.folds[name], positions, sim, options, baselines.by_fold[name])
        for name, (positions, sim) in answered.items()
    ]
    config_dict = json.loads(run.config_json)
    return Report(
        title=f"Lusifer run {run_id}",
        source="run",
        folds=folds,
        options=options,
        meta={**_run_meta(run, config_dict), **_baselines_meta(baselines, options)},
        usage=[u for u in usage if any(f.fold == u.fold for f in folds)],
        config=config_dict,
        notes=notes,
        dataset=dataset,
        baselines=baselines.by_fold,
    )


def evaluate_csv(
    csv_path: Path,
    dataset: Dataset,
    folds: tuple[str, ...],
    options: EvalOptions,
    settings: Settings,
    progress: Console | None = None,
) -> Report:
    """Score simulated ratings from a CSV against the real test ratings of ``folds``."""
    sims = read_simulated_csv(csv_path)
    matched = np.zeros(sims.users.size, dtype=bool)
    row_folds = np.array(sims.folds, dtype=object)
    answered: dict[str, tuple[NDArray[np.int64], NDArray[np.bool_]]] = {}
    notes = []
    for name in folds:
        positions = fold_positions(dataset.folds[name], sims.users, sims.items)
        mask = (positions >= 0) & ((row_folds == "") | (row_folds == name))
        if not mask.any():
            notes.append(f"{name}: no row of {csv_path.name} is a test rating of this fold")
            continue
        matched |= mask
        answered[name] = (positions, mask)
    baselines = fold_baselines(
        dataset, list(answered), options, settings, _engine(settings), progress
    )
    evaluations = [
        _score(
            dataset.folds[name],
            positions[mask],
            sims.ratings[mask],
            options,
            baselines.by_fold[name],
        )
        for name, (positions, mask) in answered.items()
    ]
    if not evaluations:
        raise DataError(
            f"no row of {csv_path.name} is a test rating of {', '.join(folds)}: "
            "check the user and item ids and --folds"
        )
    if (~matched).sum():
        notes.append(
            f"{int((~matched).sum())} rows are not test ratings of {', '.join(folds)}: ignored"
        )
    if sims.unanswered:
        notes.append(f"{sims.unanswered} rows have no numeric rating: left out")
    return Report(
        title=f"Simulated ratings from {csv_path.name}",
        source="csv",
        folds=evaluations,
        options=options,
        meta={
            "file": str(csv_path),
            "rows scored": str(int(matched.sum())),
            **_baselines_meta(baselines, options),
        },
        notes=notes,
    )


def evaluate_baselines(
    dataset: Dataset,
    folds: tuple[str, ...],
    options: EvalOptions,
    settings: Settings,
    progress: Console | None = None,
) -> Report:
    """Every baseline on the whole test set of each fold."""
    baselines = fold_baselines(dataset, list(folds), options, settings, _engine(settings), progress)
    evaluations = [
        _score(
            dataset.folds[name],
            np.arange(len(dataset.folds[name].test), dtype=np.int64),
            None,
            options,
            baselines.by_fold[name],
        )
        for name in folds
    ]
    return Report(
        title="Collaborative-filtering baselines",
        source="baselines",
        folds=evaluations,
        options=options,
        meta={
            "dataset": dataset.name,
            "folds": ", ".join(folds),
            **_baselines_meta(baselines, options),
        },
    )


def _engine(settings: Settings) -> Engine | None:
    """The configured database, where workers may have stored predictions; else none."""
    return get_engine(settings.database_url) if settings.database_url else None
