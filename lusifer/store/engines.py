"""Engines, sessions and dialect-portable upserts for SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from lusifer.core.errors import ServiceError
from lusifer.core.settings import get_settings
from lusifer.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from lusifer.store.migrate import SchemaUpgrade, require_current_schema, upgrade_schema

_ENGINES = threading.Lock()


def get_engine(url: str) -> Engine:
    """Return a process-wide engine for ``url`` (SQLite gets WAL and a busy timeout)."""
    # One creator at a time: a worker's threads all ask at once when it starts, and
    # lru_cache alone would let each of them build an engine with its own connection pool.
    with _ENGINES:
        return _engine(url)


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        else:
            settings = get_settings()
            # No ping before each checkout: it was a round trip more for every statement a
            # worker runs. A connection that a database restart broke fails its statement
            # once, the pool drops every connection of that age, and the job is retried
            # (``workers.tasks``).
            engine = create_engine(
                url,
                pool_pre_ping=False,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
            )
    except (ArgumentError, SQLAlchemyError, ImportError) as err:
        raise ServiceError(
            f"cannot use database URL {redact_url(url)}: {err}; "
            "set LUSIFER_DATABASE_URL to e.g. postgresql+psycopg://user@host/db"
        ) from None
    return engine


def autocommit(engine: Engine) -> Engine:
    """The engine's pool with every statement committed on its own.

    For single statements: no BEGIN before and no COMMIT after, two round trips less.
    """
    return _autocommit(engine)


@lru_cache(maxsize=16)
def _autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the coordinator read progress while workers write.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    # pysqlite begins transactions DEFERRED: one that reads, then writes, must upgrade its
    # lock, and SQLite refuses the upgrade at once ("database is locked", no busy wait) when
    # another process wrote in between. Taking the write lock first makes it wait its turn.
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def redact_url(url: str) -> str:
    """Hide the password of a service URL before it is printed or logged."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def create_tables(engine: Engine) -> SchemaUpgrade:
    """Bring the schema to the newest migration (creating it in an empty database).

    Fails with one line if the database is unreachable or the role may not change it.
    """
    try:
        return upgrade_schema(engine)
    except SQLAlchemyError as err:
        orig = getattr(err, "orig", None)
        reason = str(orig or err).strip().splitlines()[0]
        raise ServiceError(
            f"cannot create tables in database {redact_url(str(engine.url))} ({reason}); "
            "start it, or fix LUSIFER_DATABASE_URL and the role's permissions"
        ) from None


def check_database(engine: Engine) -> None:
    """Fail with one line when the database cannot be reached.

    A SQLite file that does not exist yet is not created here (connecting would create it):
    its directory must exist, so that a run that fails a later check leaves no file behind.
    """
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
        path = Path(database)
        if not path.exists():
            if not path.parent.is_dir():
                raise ServiceError(
                    f"database {redact_url(str(engine.url))} cannot be created: {path.parent} "
                    "is not a directory; create it or fix LUSIFER_DATABASE_URL"
                )
            return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        orig = getattr(err, "orig", None)
        reason = str(orig or err).strip().splitlines()[0]
        raise ServiceError(
            f"database {redact_url(str(engine.url))} is unreachable ({reason}); "
            "start it or fix LUSIFER_DATABASE_URL"
        ) from None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def upsert(
    session: Session | Connection,
    table: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """Insert ``rows``; on a conflict on ``keys`` update ``update`` columns (or do nothing)."""
    if not rows:
        return
    conn = session if isinstance(session, Connection) else session.connection()
    stmt = _upsert_statement(conn.dialect.name, table, tuple(keys), tuple(update))
    # One statement for many parameter sets (the driver batches them): a VALUES list of
    # thousands of rows would be compiled anew every time. Core, not the ORM: the rows are
    # plain dicts and need no identity map.
    conn.execute(stmt, list(rows))


@lru_cache(maxsize=64)
def _upsert_statement(
    dialect: str, table: type[SQLModel], keys: tuple[str, ...], update: tuple[str, ...]
) -> Any:
    # Built once per table and key set: workers upsert on every LLM call.
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert_fn(table.__table__)  # type: ignore[attr-defined]
    if update:
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={col: getattr(stmt.excluded, col) for col in update}
        )
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def require_tables(engine: Engine) -> None:
    """Fail with one line when the database is unreachable or holds no Lusifer tables."""
    check_database(engine)
    database = engine.url.database
    missing_file = engine.url.get_backend_name() == "sqlite" and not (
        database and (database == ":memory:" or Path(database).exists())
    )
    # Inspecting a SQLite file that is not there would create it: a read leaves no file behind.
    if missing_file or not inspect(engine).has_table("run"):
        raise ServiceError(
            f"database {redact_url(str(engine.url))} holds no Lusifer runs; "
            "check LUSIFER_DATABASE_URL (or run `lusifer init-db` for a new database)"
        )
    with engine.connect() as conn:
        require_current_schema(conn, redact_url(str(engine.url)))
