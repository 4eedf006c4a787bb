"""A run as the workers see it: configuration, prompt set and texts, read from the database."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from lusifer.core.config import RunConfig, parse_run_config
from lusifer.core.errors import DataError
from lusifer.data import Dataset, Item, item_info, user_info
from lusifer.method.prompts import PromptSet
from lusifer.store.engines import upsert
from lusifer.store.tables import ItemText, Run, UserText


@dataclass(frozen=True)
class RunContext:
    """What every job of a run needs, loaded once per worker process."""

    run_id: str
    config: RunConfig
    prompts: PromptSet
    item_info: Mapping[int, str]
    user_info: dict[int, str]


class ItemTexts(Mapping[int, str]):
    """Item texts of a dataset, each formatted the first time a job asks for it.

    A worker's first job waits for its run's context; formatting all of a dataset's items
    (1,682 for MovieLens 100K) up front would add tens of milliseconds to that wait in every
    worker process, for items most of its jobs never show. Two threads that format the same
    item at once store the same text.
    """

    def __init__(self, rows: Mapping[int, Any], overview_chars: int) -> None:
        self._rows = rows  # ``ItemText`` rows by item id
        self._overview_chars = overview_chars
        self._texts: dict[int, str] = {}

    def __getitem__(self, item_id: int) -> str:
        text = self._texts.get(item_id)
        if text is None:
            text = item_info(_item(self._rows[item_id]), self._overview_chars)
            self._texts[item_id] = text
        return text

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def read_item_texts(session: Session, fingerprint: str, overview_chars: int) -> ItemTexts:
    """The item texts stored for a dataset, as jobs show them."""
    # Plain rows, not ORM objects: a dataset has thousands of items.
    texts = ItemText.__table__  # type: ignore[attr-defined]
    rows = session.execute(sa_select(texts).where(texts.c.dataset_fingerprint == fingerprint))
    return ItemTexts({row.item_id: row for row in rows}, overview_chars)


def prompt_set_to_json(prompts: PromptSet) -> str:
    """Serialise a prompt set so workers render exactly what the run was planned with."""
    return json.dumps(
        {
            "name": prompts.name,
            "version": prompts.version,
            "description": prompts.description,
            "chunk_size": prompts.chunk_size,
            "directory": str(prompts.directory),
            "sources": prompts.sources,
            "content_hash": prompts.content_hash,
        }
    )


def prompt_set_from_json(text: str) -> PromptSet:
    """Rebuild a prompt set stored with a run."""
    from pathlib import Path

    data = json.loads(text)
    return PromptSet(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        chunk_size=int(data["chunk_size"]),
        directory=Path(data["directory"]),
        sources=dict(data["sources"]),
        content_hash=data["content_hash"],
    )


def store_dataset_texts(session: Session, dataset: Dataset) -> None:
    """Store what jobs need to know of a dataset's items and users, once per fingerprint."""
    fingerprint = dataset.fingerprint
    upsert(
        session,
        ItemText,
        [
            {
                "dataset_fingerprint": fingerprint,
                "item_id": i.item_id,
                "title": i.title,
                "year": i.year,
                "genres": "|".join(i.genres),
                "overview": i.overview,
            }
            for i in dataset.items.values()
        ],
        keys=["dataset_fingerprint", "item_id"],
    )
    upsert(
        session,
        UserText,
        [
            {"dataset_fingerprint": fingerprint, "user_id": u.user_id, "info": user_info(u)}
            for u in dataset.users.values()
        ],
        keys=["dataset_fingerprint", "user_id"],
    )


@lru_cache(maxsize=16)
def _load_context(engine: Engine, run_id: str) -> RunContext:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise DataError(f"run {run_id!r} is not in the database; check the run id")
        fingerprint = run.dataset_fingerprint
        users = session.exec(
            select(UserText.user_id, UserText.info).where(
                UserText.dataset_fingerprint == fingerprint
            )
        ).all()
        config = parse_run_config(json.loads(run.config_json))
        return RunContext(
            run_id=run_id,
            config=config,
            prompts=prompt_set_from_json(run.prompts_json),
            item_info=read_item_texts(session, fingerprint, config.overview_chars),
            user_info=dict(users),
        )


def _item(row: Any) -> Item:
    genres = tuple(g for g in row.genres.split("|") if g)
    return Item(row.item_id, row.title, row.year, genres, row.overview)


# A worker's threads start their first jobs together: one loads the context, the others wait
# for it instead of each reading every item text of the dataset.
_context_lock = threading.Lock()


def load_run_context(engine: Engine, run_id: str) -> RunContext:
    """The run's context, cached per process (a run's configuration never changes)."""
    with _context_lock:
        return _load_context(engine, run_id)
