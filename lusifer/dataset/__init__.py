"""Datasets for the simulator: MovieLens 100K (plus TMDB overviews) or any CSV triple."""

from lusifer.dataset.download import ML100K_SHA256, ML100K_URL, ensure_movielens_100k
from lusifer.dataset.features import item_info, truncate_words, user_info
from lusifer.dataset.generic import ColumnMapping, load_csv_dataset
from lusifer.dataset.model import Dataset, Fold, Item, Rating, User
from lusifer.dataset.movielens import DEFAULT_FOLDS, VALID_FOLDS, load_movielens_100k

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
    "User",
    "ensure_movielens_100k",
    "item_info",
    "load_csv_dataset",
    "load_movielens_100k",
    "truncate_words",
    "user_info",
]
