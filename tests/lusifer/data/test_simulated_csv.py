"""Reading simulated ratings from CSV: columns, folds, gaps and mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lusifer.core.errors import DataError
from lusifer.data.simulated_csv import read_simulated_csv


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sim.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_rating_column(tmp_path: Path) -> None:
    sims = read_simulated_csv(_csv(tmp_path, "user_id,item_id,rating\n1,10,4\n2,20,3.5\n"))
    assert sims.users.tolist() == [1, 2]
    assert sims.items.tolist() == [10, 20]
    assert sims.ratings.tolist() == [4.0, 3.5]
    assert sims.folds == ("", "") and sims.unanswered == 0


def test_simulated_rating_wins_over_rating(tmp_path: Path) -> None:
    text = "user_id,item_id,rating,simulated_rating,fold\n1,10,5,2,u1\n1,10,5,3,u2\n"
    sims = read_simulated_csv(_csv(tmp_path, text))
    assert sims.ratings.tolist() == [2.0, 3.0]
    assert sims.folds == ("u1", "u2")


def test_blank_or_non_numeric_answers_are_counted_not_scored(tmp_path: Path) -> None:
    text = "user_id,item_id,simulated_rating\n1,10,\n1,11,n/a\n1,12,nan\n1,13,4\n"
    sims = read_simulated_csv(_csv(tmp_path, text))
    assert sims.items.tolist() == [13]
    assert sims.unanswered == 3


def test_header_with_bom_and_spaces(tmp_path: Path) -> None:
    sims = read_simulated_csv(_csv(tmp_path, "\ufeffuser_id, item_id ,rating\n1,10,4\n"))
    assert sims.users.tolist() == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item,rating\n1,2,3\n", "lacks column user_id, item_id"),
        ("user_id,item_id,stars\n1,2,3\n", "lacks column rating"),
        ("user_id,item_id,rating\n1,x,3\n", "line 2: user_id and item_id must be integers"),
        ("user_id,item_id,rating\n1,2,3\n1,2,4\n", "line 3: user 1 rates item 2 twice"),
    ],
)
def test_mistakes_are_data_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_simulated_csv(_csv(tmp_path, text))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_simulated_csv(tmp_path / "nope.csv")
