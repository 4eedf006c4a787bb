"""Which dataset a run uses, and loading it: MovieLens 100K or the user's own CSV files.

Apart from the runner so that `lusifer run` finds (and refuses) its data before it imports the
database, the queue and the LLM client.
"""

from __future__ import annotations

from pathlib import Path

from lusifer.core.config import DatasetConfig, RunConfig
from lusifer.core.errors import DataError
from lusifer.core.settings import Settings
from lusifer.data import Dataset, ensure_movielens_100k, load_movielens_100k

TMDB_RELATIVE = Path("tmdb") / "ml-100k_movies_tmdb.csv"


def resolve_dataset_config(
    data_dir: Path | None, overviews: Path | None, settings: Settings
) -> DatasetConfig:
    """Find the MovieLens directory (given, from LUSIFER_DATA_DIR, or downloaded) and overviews."""
    base = data_dir or settings.data_dir
    if base is None:
        ml_dir = ensure_movielens_100k(Path(settings.cache_dir))
    elif (base / "ml-100k" / "u.data").is_file():
        ml_dir = base / "ml-100k"
    else:
        ml_dir = base
    if overviews is None and base is not None and (base / TMDB_RELATIVE).is_file():
        overviews = base / TMDB_RELATIVE
    return DatasetConfig(data_dir=ml_dir.resolve(), overviews_csv=overviews)


def load_dataset(config: RunConfig) -> Dataset:
    """Load the dataset a run configuration names."""
    return load_dataset_spec(config.dataset, config.folds)


def load_dataset_spec(spec: DatasetConfig, folds: tuple[str, ...]) -> Dataset:
    """Load MovieLens 100K (only ``folds``) or a CSV dataset (all its seeded folds)."""
    if spec.kind == "csv":
        assert spec.ratings_csv is not None and spec.items_csv is not None  # validated
        # Imported here: it reads with pandas, which no other command path needs at start.
        from lusifer.data.generic import load_csv_dataset

        return load_csv_dataset(
            spec.ratings_csv,
            spec.items_csv,
            spec.users_csv,
            columns=spec.columns,
            n_folds=spec.n_folds,
            seed=spec.split_seed,
            name=spec.ratings_csv.stem,
            encoding=spec.encoding,
            delimiter=spec.delimiter,
        )
    if spec.kind == "dataframes":
        raise DataError(
            "this run was planned from pandas DataFrames, which are not stored: score it with "
            "Lusifer(...).evaluate() or `lusifer report RUN` without --json/--html/--baselines"
        )
    if spec.data_dir is None:
        raise DataError("the run configuration names no dataset directory; pass --data-dir")
    return load_movielens_100k(spec.data_dir, spec.overviews_csv, folds=folds)
