"""The database schema, managed by Alembic migrations shipped inside the package.

Every place that prepares a database (``lusifer init-db``, ``lusifer run`` in cluster and local
mode, the environment) calls ``upgrade_schema``: a new database gets every revision, an old one
the revisions it lacks, and a database made before migrations existed (tables, but no
``alembic_version``) is adopted at revision 0001 and upgraded from there.

Adding a table or a column (after changing ``lusifer/store/tables.py``)::

    PYTHONPATH=. python -m lusifer.store.migrations revision "what changed"

writes ``lusifer/store/migrations/versions/NNNN_what_changed.py`` from the difference between the
tables and the newest revision. Read it, fix what autogenerate cannot know (renames, data to
carry over, server defaults for new NOT NULL columns), and commit it.
``tests/lusifer/store/test_migrations.py`` fails while ``tables.py`` and the migrations disagree.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, inspect, text

from lusifer.core.errors import ServiceError

# Alembic is imported by the functions that use it: a worker or `lusifer --help` that never
# reads the schema revision would otherwise pay a few tenths of a second at every start.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant: PostgreSQL serialises concurrent upgrades (two coordinators, a coordinator and
# `init-db`) on this advisory lock, so a table is never created twice at once.
_PG_LOCK_KEY = 7_465_317_001


@dataclass(frozen=True)
class SchemaUpgrade:
    """What ``upgrade_schema`` did: the revisions before and after, and whether it adopted
    a database made before migrations existed."""

    before: str | None
    after: str
    adopted: bool = False

    @property
    def changed(self) -> bool:
        """Whether any revision was applied."""
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code; no alembic.ini is needed."""
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolation: a "%" in the install path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this Lusifer knows."""
    head = _scripts().get_current_head()
    assert head is not None, "lusifer/store/migrations/versions holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at; None for an empty or pre-migration database."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _where(engine: Engine) -> str:
    # The URL without its password, as lusifer.store.engines.redact_url prints it.
    return engine.url.render_as_string(hide_password=True)


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _scripts().walk_revisions())


def upgrade_schema(engine: Engine) -> SchemaUpgrade:
    """Bring a database to the newest revision; see the module docstring."""
    from alembic import command

    head = head_revision()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = current_revision(connection)
        if before == head:
            return SchemaUpgrade(before, head)
        if before is not None and not _known(before):
            raise ServiceError(
                f"database {_where(engine)} has schema revision {before}, newer than this "
                f"Lusifer knows ({head}); upgrade Lusifer"
            )
        adopted = before is None and inspect(connection).has_table("run")
        # Revision 0001 creates only the tables that are absent, so a database made by
        # create_all before migrations is stamped at 0001 with its rows kept, then upgraded.
        command.upgrade(alembic_config(connection), "head")
    return SchemaUpgrade(before, head, adopted)


def require_current_schema(connection: Connection, where: str) -> None:
    """Fail with one line unless the database ``where`` is at the newest revision."""
    revision, head = current_revision(connection), head_revision()
    if revision == head:
        return
    if revision is not None and not _known(revision):
        raise ServiceError(
            f"database {where} has schema revision {revision}, newer than this Lusifer "
            f"knows ({head}); upgrade Lusifer"
        )
    raise ServiceError(
        f"database {where} has an older schema (revision {revision or 'from before migrations'},"
        f" now {head}); run `lusifer init-db` to upgrade it"
    )


def new_revision(message: str) -> Path:
    """Autogenerate the next revision from the difference between tables.py and the head."""
    from alembic import command

    numbers = [int(s.revision) for s in _scripts().walk_revisions() if s.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    with tempfile.TemporaryDirectory() as scratch:
        # An empty SQLite database upgraded to the head is what autogenerate compares with.
        engine = create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        upgrade_schema(engine)
        with engine.begin() as connection:
            config = alembic_config(connection)
            config.set_main_option("file_template", f"%%(rev)s_{slug}")
            script = command.revision(config, message, autogenerate=True, rev_id=rev_id)
        engine.dispose()
    _scripts.cache_clear()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
