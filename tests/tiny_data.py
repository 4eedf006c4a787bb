"""A hand-made MovieLens-format dataset small enough for command-line tests to load at once."""

from __future__ import annotations

from pathlib import Path

GENRE_FLAGS = "|".join(["0"] * 18 + ["1"])  # the 19 genre flags of u.item: Western


def write_tiny_movielens(root: Path) -> Path:
    """Four users, twelve items, fold u1 (writes ``root/ml``).

    Users 1 and 2 have eight training and two test ratings; user 3 has test ratings and no
    training history; user 4 has none at all.
    """
    ml = root / "ml"
    ml.mkdir()
    (ml / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n4|24|M|other|43537\n"
    )
    (ml / "u.item").write_text(
        "".join(
            f"{i}|Movie {i} (199{i % 10})|01-Jan-199{i % 10}||http://x|{GENRE_FLAGS}\n"
            for i in range(1, 13)
        )
    )
    base = [f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + i}" for u in (1, 2) for i in range(1, 9)]
    test = [f"{u}\t{i}\t{1 + (u * i) % 5}\t{890000000 + i}" for u in (1, 2, 3) for i in (9, 10)]
    (ml / "u1.base").write_text("\n".join(base) + "\n")
    (ml / "u1.test").write_text("\n".join(test) + "\n")
    return ml
