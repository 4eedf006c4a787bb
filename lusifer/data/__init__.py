"""Datasets for the simulator: MovieLens 100K (plus TMDB overviews) or any CSV triple.

``load_csv_dataset`` is imported on first use: it reads with pandas, which most processes that
use a dataset (the workers, ``lusifer status``) never need.
"""

from typing import TYPE_CHECKING

from lusifer.core.columns import ColumnMapping
from lusifer.core.lazy import lazy_exports
from lusifer.data.download import ML100K_SHA256, ML100K_URL, ensure_movielens_100k
from lusifer.data.features import item_info, truncate_words, user_info
from lusifer.data.model import Dataset, Fold, Item, Rating, Ratings, User
from lusifer.data.movielens import DEFAULT_FOLDS, VALID_FOLDS, load_movielens_100k

__all__ = [
    "DEFAULT_FOLDS",
    "ML100K_SHA256",
    "ML100K_URL",
    "VALID_FOLDS",
    "ColumnMapping",
    "Dataset",
    "Fold",
    "Item",
    "Rating",
    "Ratings",
    "User",
    "ensure_movielens_100k",
    "item_info",
    "load_csv_dataset",
    "load_movielens_100k",
    "truncate_words",
    "user_info",
]

if TYPE_CHECKING:
    from lusifer.data.generic import load_csv_dataset

__getattr__ = lazy_exports(__name__, {"load_csv_dataset": "lusifer.data.generic"})
