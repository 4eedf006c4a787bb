"""Alembic environment of Lusifer: run on a connection that ``lusifer.store.migrate`` hands over.

There is no alembic.ini: ``lusifer.store.migrate`` builds the configuration in code and puts
the open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel

from lusifer.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)


def _render_type(kind: str, item: Any, _autogen: AutogenContext) -> str | Literal[False]:
    # SQLModel's own column types are plain VARCHAR and TIMESTAMP WITH TIME ZONE in the
    # database; written as SQLAlchemy types, new revisions need no import of sqlmodel.
    if kind == "type":
        name = type(item).__name__
        if name == "AutoString":
            return "sa.String()"
        if name == "UTCDateTime":
            return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through lusifer.store.migrate, which passes a connection")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite can alter a table only by copying it; batch mode does that for it.
    render_as_batch=True,
    compare_type=True,
    render_item=_render_type,
)
with context.begin_transaction():
    context.run_migrations()
