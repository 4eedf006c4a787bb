"""A run's context as workers read it: item texts formatted on demand, as the plan stored them."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.plan import plan_run, store_plan
from lusifer.core.config import RunConfig
from lusifer.data import Dataset, Fold, Item, Rating, User, item_info
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import create_tables, get_engine
from lusifer.store.runs import ItemTexts, load_run_context

OVERVIEW = "A long overview. " * 40


def _dataset() -> Dataset:
    items = {
        1: Item(1, "Heat", 1995, ("Action", "Crime"), OVERVIEW),
        2: Item(2, "Up", None, (), None),
        3: Item(3, "Alien", 1979, ("Horror",), "In space."),
    }
    ratings = (Rating(1, 1, 4, 1), Rating(1, 2, 3, 2))
    return Dataset(
        name="tiny",
        users={1: User(1, 30, "F", "writer")},
        items=items,
        folds={"f1": Fold.of("f1", ratings, (Rating(1, 3, 5, 3),))},
        fingerprint="runs-fingerprint",
    )


def test_a_runs_item_texts_are_those_of_its_dataset_at_its_overview_length(
    tmp_path: Path,
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    create_tables(engine)
    config = RunConfig.model_validate(
        {"folds": ("f1",), "overview_chars": 60, "llm": {"base_url": "http://x/v1", "model": "m"}}
    )
    dataset = _dataset()
    store_plan(engine, plan_run("r1", config, dataset, load_prompt_set("lusifer")), dataset)

    texts = load_run_context(engine, "r1").item_info

    assert isinstance(texts, ItemTexts)
    assert sorted(texts) == [1, 2, 3] and len(texts) == 3
    for item_id, item in dataset.items.items():
        assert texts[item_id] == item_info(item, 60)
    assert texts[2] == "Title: Up"  # no year, genres or overview: those parts are left out
    assert len(texts[1]) < len(item_info(dataset.items[1], 600))
    with pytest.raises(KeyError):
        texts[99]


def test_item_texts_format_each_item_once_and_only_when_asked() -> None:
    class Row:
        def __init__(self, item_id: int) -> None:
            self.item_id, self.title, self.year = item_id, f"Movie {item_id}", 1990
            self.overview: str | None = None
            self.reads = 0

        @property
        def genres(self) -> str:
            self.reads += 1
            return "Drama|Comedy"

    rows = {i: Row(i) for i in range(1, 1001)}
    texts = ItemTexts(rows, 600)
    assert all(row.reads == 0 for row in rows.values())  # nothing formatted up front
    first = texts[7]
    assert first == "Title: Movie 7; Year: 1990; Genres: Drama, Comedy"
    assert texts[7] is first and rows[7].reads == 1
    assert sum(row.reads for row in rows.values()) == 1
