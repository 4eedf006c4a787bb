"""Copying Lusifer's tables from one database into another, keeping what the target holds.

Local mode kept its runs in a SQLite file before it ran on an embedded PostgreSQL; this is
how such a file is brought in (``lusifer import-sqlite``). Rows are inserted with ``ON
CONFLICT DO NOTHING`` on their natural key, so a copy that is run twice, or that meets runs
the target already has, adds each row once. Surrogate integer ids are left to the target's
sequences (copied ids would collide with the rows it numbers later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy import Column, Engine, Table, UniqueConstraint, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from lusifer.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

_BATCH = 5000
# Not data: the schema tool's bookkeeping, and the job counts that the target's own triggers
# keep as the jobs are copied in (copying them too would count every job twice).
_SKIPPED = frozenset({"alembic_version", "jobtally", "jobtallydelta"})


def _surrogate(column: Column[Any]) -> bool:
    return column is column.table.autoincrement_column


def natural_key(table: Table) -> list[str]:
    """The columns that identify a row across databases (its primary key, unless surrogate)."""
    primary = list(table.primary_key.columns)
    if not any(_surrogate(c) for c in primary):
        return [c.name for c in primary]
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            return [c.name for c in constraint.columns]
    raise ValueError(f"table {table.name} has no natural key to copy it by")


def _batches(rows: Iterator[Any], size: int) -> Iterator[list[dict[str, Any]]]:
    while batch := list(islice(rows, size)):
        yield [dict(row._mapping) for row in batch]


def copy_tables(
    source: Engine,
    target: Engine,
    on_table: Callable[[str, int], None] | None = None,
    only: Sequence[Table] | None = None,
) -> dict[str, int]:
    """Copy every row of the tables ``only`` names (default: all of Lusifer's) from
    ``source`` to ``target``.

    Both must hold the current schema. Returns the rows read per table; ``on_table`` is told
    each table's name and count as it is done.
    """
    insert_fn = postgresql.insert if target.dialect.name == "postgresql" else sqlite.insert
    copied: dict[str, int] = {}
    chosen = only if only is not None else SQLModel.metadata.sorted_tables
    with source.connect() as reader, target.begin() as writer:
        for table in chosen:
            if table.name in _SKIPPED:
                continue
            columns = [c for c in table.columns if not _surrogate(c)]
            statement = insert_fn(table).on_conflict_do_nothing(index_elements=natural_key(table))
            result = reader.execution_options(yield_per=_BATCH).execute(select(*columns))
            count = 0
            for batch in _batches(iter(result), _BATCH):
                writer.execute(statement, batch)
                count += len(batch)
            copied[table.name] = count
            if on_table is not None:
                on_table(table.name, count)
    return copied
