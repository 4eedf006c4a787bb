"""Simulated ratings produced elsewhere, read from CSV so they are scored with our code.

Columns: ``user_id``, ``item_id`` and the simulated rating in ``simulated_rating`` or, when
that column is absent, ``rating``; an optional ``fold`` column says which fold a row belongs
to. When both ``rating`` and ``simulated_rating`` exist, ``rating`` is taken to be the real
rating and ignored: the real ratings always come from the dataset.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lusifer.core.errors import DataError

__all__ = ["SimulatedRatings", "read_simulated_csv"]


@dataclass(frozen=True)
class SimulatedRatings:
    """Aligned arrays of a CSV's answered rows; ``folds`` is empty strings without a column."""

    users: NDArray[np.int64]
    items: NDArray[np.int64]
    ratings: NDArray[np.float64]
    folds: tuple[str, ...]
    unanswered: int  # rows with an empty or non-numeric rating


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_simulated_csv(path: Path) -> SimulatedRatings:
    """Read and check a CSV of simulated ratings; each (fold, user, item) may appear once."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}; check the path") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        column = "simulated_rating" if "simulated_rating" in header else "rating"
        missing = [c for c in ("user_id", "item_id", column) if c not in header]
        if missing:
            raise DataError(
                f"{path.name} lacks column {', '.join(missing)}: the CSV needs a header "
                "user_id,item_id,rating (or simulated_rating)"
            )
        users: list[int] = []
        items: list[int] = []
        ratings: list[float] = []
        folds: list[str] = []
        seen: set[tuple[str, int, int]] = set()
        unanswered = 0
        for line, row in enumerate(reader, start=2):
            try:
                user, item = int(row["user_id"]), int(row["item_id"])
            except (TypeError, ValueError):
                raise DataError(
                    f"{path.name} line {line}: user_id and item_id must be integers"
                ) from None
            fold = (row.get("fold") or "").strip()
            if (fold, user, item) in seen:
                raise DataError(
                    f"{path.name} line {line}: user {user} rates item {item} twice; "
                    "keep one simulated rating per pair"
                )
            seen.add((fold, user, item))
            rating = _number((row.get(column) or "").strip())
            if rating is None:
                unanswered += 1
                continue
            users.append(user)
            items.append(item)
            ratings.append(rating)
            folds.append(fold)
    return SimulatedRatings(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        ratings=np.array(ratings, dtype=np.float64),
        folds=tuple(folds),
        unanswered=unanswered,
    )
