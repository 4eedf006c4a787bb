"""Baselines as jobs: a fold's split stored once, one job per (split, method, seed).

A worker needs nothing but the database: the coordinator stores the fold's ratings
(``FoldSplit``) and one ``Job`` of kind ``baseline`` per method; the worker loads the split,
fits the method with the job's seed and stores its continuous predictions of the whole test
set (``BaselinePrediction``). Everything is keyed by a digest of the fold's ratings, so the
same fold is fitted once for every run, comparison or CSV score that needs it.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, inspect
from sqlmodel import Session, col, select

from lusifer.core.errors import DataError
from lusifer.data import Fold
from lusifer.evaluate.baselines import BASELINE_VERSION, RatingTriples, predict_baseline
from lusifer.store.engines import session_scope, upsert
from lusifer.store.tables import BaselinePrediction, FoldSplit, Job, JobKind, JobState

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class BaselineInputs(BaseModel):
    """What a baseline job fits: a stored split, a method, a seed, a baseline version."""

    model_config = ConfigDict(frozen=True)

    split_digest: str
    method: str
    seed: int
    version: str


def fold_digest(fold: Fold) -> str:
    """Hash of a fold's training and test ratings (not of item text: baselines ignore it)."""
    digest = hashlib.sha256()
    for part in (fold.train, fold.test):
        t = RatingTriples.of(part)
        for array in (t.users, t.items, t.ratings):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def encode_arrays(**arrays: NDArray[Any]) -> bytes:
    """Named arrays as one compressed ``.npz`` archive."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def decode_arrays(data: bytes) -> dict[str, NDArray[Any]]:
    """The arrays of an ``encode_arrays`` archive (no pickled objects are ever loaded)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def baseline_job_id(digest: str, method: str, seed: int) -> str:
    """Deterministic id of a baseline job: split, method, seed and baseline version."""
    return f"{baseline_run_id(digest)}/{method}/s{seed}/v{BASELINE_VERSION}"


def baseline_run_id(digest: str) -> str:
    """The pseudo run id grouping the baseline jobs of one stored split."""
    return f"{JobKind.BASELINE}/{digest}"


def split_row(fold: Fold, dataset_fingerprint: str) -> dict[str, Any]:
    """The ``FoldSplit`` row of a fold."""
    train, test = RatingTriples.of(fold.train), RatingTriples.of(fold.test)
    data = encode_arrays(
        train_users=train.users.astype(np.int32),
        train_items=train.items.astype(np.int32),
        train_ratings=train.ratings.astype(np.int8),
        test_users=test.users.astype(np.int32),
        test_items=test.items.astype(np.int32),
    )
    return {
        "digest": fold_digest(fold),
        "fold": fold.name,
        "dataset_fingerprint": dataset_fingerprint,
        "n_train": len(fold.train),
        "n_test": len(fold.test),
        "data": data,
    }


def baseline_job_rows(
    digest: str, fold_name: str, methods: Sequence[str], seed: int
) -> list[dict[str, Any]]:
    """One pending ``Job`` row per method for a stored split."""
    return [
        {
            "id": baseline_job_id(digest, method, seed),
            "run_id": baseline_run_id(digest),
            "fold": fold_name,
            "user_id": 0,
            "kind": JobKind.BASELINE,
            "chunk": 0,
            "state": JobState.PENDING,
            "depends_on": None,
            "inputs_json": BaselineInputs(
                split_digest=digest, method=method, seed=seed, version=BASELINE_VERSION
            ).model_dump_json(),
        }
        for method in methods
    ]


def plan_baseline_jobs(
    engine: Engine, fold: Fold, dataset_fingerprint: str, methods: Sequence[str], seed: int
) -> list[str]:
    """Store a fold's split and its baseline jobs (both kept if already there); their ids."""
    split = split_row(fold, dataset_fingerprint)
    jobs = baseline_job_rows(split["digest"], fold.name, methods, seed)
    with session_scope(engine) as session:
        upsert(session, FoldSplit, [split], keys=["digest"])
        upsert(session, Job, jobs, keys=["id"])
    return [job["id"] for job in jobs]


def load_split(engine: Engine, digest: str) -> tuple[RatingTriples, Ints, Ints]:
    """The training ratings and the test (user, item) pairs of a stored split."""
    with Session(engine) as session:
        row = session.get(FoldSplit, digest)
    if row is None:
        raise DataError(f"fold split {digest} is not in the database; plan the baselines again")
    arrays = decode_arrays(row.data)
    train = RatingTriples(
        arrays["train_users"].astype(np.int64),
        arrays["train_items"].astype(np.int64),
        arrays["train_ratings"].astype(np.float64),
    )
    return train, arrays["test_users"].astype(np.int64), arrays["test_items"].astype(np.int64)


def execute_baseline_job(engine: Engine, job: Job) -> None:
    """Fit the job's method on its split and store the predictions (once, however often run)."""
    inputs = BaselineInputs.model_validate_json(job.inputs_json)
    if inputs.version != BASELINE_VERSION:
        raise DataError(
            f"job {job.id} asks for baseline version {inputs.version} but this worker has "
            f"version {BASELINE_VERSION}: run workers of the coordinator's release"
        )
    train, users, items = load_split(engine, inputs.split_digest)
    started = time.perf_counter()
    prediction = predict_baseline(inputs.method, train, users, items, seed=inputs.seed)
    row = {
        "job_id": job.id,
        "split_digest": inputs.split_digest,
        "method": inputs.method,
        "seed": inputs.seed,
        "version": inputs.version,
        "n": int(prediction.size),
        "data": encode_arrays(prediction=prediction.astype(np.float64)),
        "fit_seconds": time.perf_counter() - started,
    }
    with session_scope(engine) as session:
        # A second run of the job fits the same numbers (fixed seed): keep the first row.
        upsert(session, BaselinePrediction, [row], keys=["job_id"])


def stored_predictions(
    engine: Engine, fold: Fold, methods: Sequence[str], seed: int
) -> dict[str, Floats]:
    """Predictions of the fold's whole test set that are in the database, by method."""
    if not inspect(engine).has_table(str(BaselinePrediction.__tablename__)):
        return {}  # a database made before baselines ran as jobs
    digest = fold_digest(fold)
    wanted = {baseline_job_id(digest, m, seed): m for m in methods}
    with Session(engine) as session:
        rows = session.exec(
            select(BaselinePrediction).where(col(BaselinePrediction.job_id).in_(list(wanted)))
        ).all()
    found: dict[str, Floats] = {}
    for row in rows:
        prediction = decode_arrays(row.data)["prediction"].astype(np.float64)
        if prediction.shape == (len(fold.test),):
            found[wanted[row.job_id]] = prediction
    return {m: found[m] for m in methods if m in found}
