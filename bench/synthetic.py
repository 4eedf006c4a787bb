"""Seeded synthetic datasets shaped like MovieLens-1M, written as the CSV triple a user brings.

Only the shape matters for the scale figure: how many users, items and ratings, a long tail of
ratings per user (at least 20, as in MovieLens), item popularity that falls off like Zipf's
law, and MovieLens' spread of ratings. The files go to a cache directory outside the
repository and are made once per shape and seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# MovieLens-1M's share of each star, 1..5.
_STAR_SHARE = np.array([0.056, 0.108, 0.261, 0.349, 0.226])
_GENRES = ("Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi", "Horror", "Children's")
_OCCUPATIONS = ("student", "engineer", "artist", "doctor", "writer", "other")


@dataclass(frozen=True)
class Shape:
    """How big a synthetic dataset is."""

    name: str
    users: int
    items: int
    ratings: int


SHAPES = {
    "ml1m": Shape("ml1m", users=6_040, items=3_700, ratings=1_000_000),
    "ml1m-10x-users": Shape("ml1m-10x-users", users=60_400, items=3_700, ratings=5_000_000),
}


@dataclass(frozen=True)
class SyntheticFiles:
    """The three CSV files of a synthetic dataset."""

    ratings: Path
    items: Path
    users: Path


def cache_dir() -> Path:
    """Where generated datasets are kept (never inside the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lusifer-bench" / "synthetic"


def ratings_per_user(shape: Shape, rng: np.random.Generator) -> NDArray[np.int64]:
    """A long-tailed count per user, at least 20 and at most half the items, summing to the
    shape's ratings."""
    weights = rng.lognormal(mean=0.0, sigma=1.0, size=shape.users)
    extra = shape.ratings - 20 * shape.users
    counts = 20 + np.floor(weights / weights.sum() * extra).astype(np.int64)
    counts = np.minimum(counts, shape.items // 2)
    # Hand the rounding remainder (and what the cap took) to the users with room left.
    short = shape.ratings - int(counts.sum())
    while short > 0:
        room = np.flatnonzero(counts < shape.items // 2)
        take = rng.choice(room, size=min(short, len(room)), replace=False)
        counts[take] += 1
        short -= len(take)
    result: NDArray[np.int64] = counts
    return result


def generate(shape: Shape, seed: int, out: Path) -> SyntheticFiles:
    """Write the dataset of ``shape`` made from ``seed`` into ``out`` (reused when present)."""
    folder = out / f"{shape.name}-seed{seed}"
    files = SyntheticFiles(folder / "ratings.csv", folder / "items.csv", folder / "users.csv")
    if files.ratings.is_file() and files.items.is_file() and files.users.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, shape.items + 1) ** 0.9
    popularity /= popularity.sum()
    counts = ratings_per_user(shape, rng)
    rows = np.empty((shape.ratings, 4), dtype=np.int64)
    start = 0
    clock = 956_703_932  # MovieLens-1M's first timestamp
    for user, count in enumerate(counts.tolist(), start=1):
        items = rng.choice(shape.items, size=count, replace=False, p=popularity) + 1
        stamps = clock + np.sort(rng.integers(0, 86_400 * 900, size=count))
        rows[start : start + count, 0] = user
        rows[start : start + count, 1] = items
        rows[start : start + count, 2] = rng.choice(5, size=count, p=_STAR_SHARE) + 1
        rows[start : start + count, 3] = stamps
        start += count
    partial = files.ratings.with_suffix(".partial")
    with partial.open("w") as handle:
        handle.write("user_id,item_id,rating,timestamp\n")
        np.savetxt(handle, rows, fmt="%d", delimiter=",")
    partial.rename(files.ratings)
    with files.items.open("w") as handle:
        handle.write("item_id,title,genres\n")
        for item in range(1, shape.items + 1):
            genres = "|".join(rng.choice(_GENRES, size=2, replace=False).tolist())
            handle.write(f"{item},Film {item} ({1950 + item % 70}),{genres}\n")
    with files.users.open("w") as handle:
        handle.write("user_id,age,gender,occupation\n")
        for user in range(1, shape.users + 1):
            occupation = _OCCUPATIONS[user % len(_OCCUPATIONS)]
            handle.write(f"{user},{18 + user % 50},{'MF'[user % 2]},{occupation}\n")
    return files
