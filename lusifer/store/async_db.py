"""The kernel's SQL statements run from an asyncio event loop.

The statements stay defined once, as SQLAlchemy Core constants beside the blocking code that
also runs them. On PostgreSQL each is compiled once to asyncpg's SQL and run on an asyncpg
pool: SQLAlchemy's execution layer and psycopg cost a worker more CPU per LLM call than
everything else it did, and asyncpg runs the same statement for a fraction of that without a
thread per call in flight. Other databases (local mode's SQLite) run the statements on the
blocking engine in a thread: their LLM calls take seconds, not milliseconds.

Only constant statements may be passed: their compiled form is cached by identity.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, literal, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as AsyncpgDialect
from sqlalchemy.exc import OperationalError

from lusifer.store.engines import autocommit

T = TypeVar("T")
Row = Mapping[Any, Any]
_PING = select(literal(1))


class AsyncConnection(ABC):
    """One connection (or transaction) of an ``AsyncDatabase``."""

    @abstractmethod
    async def execute(self, statement: Any, params: Mapping[str, Any]) -> None:
        """Run a statement for its effect."""

    @abstractmethod
    async def executemany(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per parameter set."""

    @abstractmethod
    async def all(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        """The rows a statement returns."""

    async def first(self, statement: Any, params: Mapping[str, Any]) -> Row | None:
        """The first row a statement returns, or None."""
        rows = await self.all(statement, params)
        return rows[0] if rows else None


class AsyncDatabase(ABC):
    """Runs SQLAlchemy Core statements from an event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the blocking engine of the same database

    @abstractmethod
    def connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection whose statements each commit on their own."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection whose statements commit together when the block ends without error."""

    async def run_sync(self, work: Callable[[Engine], T]) -> T:
        """``work(engine)`` in a thread: for what is not on a per-call path."""
        return await asyncio.to_thread(work, self.engine)

    async def warm_up(self) -> None:
        """Open the first connections now rather than in the first job."""
        async with self.connection() as conn:
            await conn.all(_PING, {})

    async def close(self) -> None:  # noqa: B027  (nothing to close by default)
        """Close the database's connections."""

    async def executemany(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per parameter set, all or none."""
        async with self.transaction() as tx:
            await tx.executemany(statement, params)

    # Shortcuts for one statement on a connection of its own.
    async def execute(self, statement: Any, params: Mapping[str, Any]) -> None:
        """Run a statement for its effect, committed on its own."""
        async with self.connection() as conn:
            await conn.execute(statement, params)

    async def first(self, statement: Any, params: Mapping[str, Any]) -> Row | None:
        """The first row of a statement, committed on its own."""
        async with self.connection() as conn:
            return await conn.first(statement, params)

    async def all(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        """The rows of a statement, committed on its own."""
        async with self.connection() as conn:
            return await conn.all(statement, params)


def open_database(engine: Engine, pool_size: int) -> AsyncDatabase:
    """The async twin of ``engine``: asyncpg on PostgreSQL, else the engine in threads."""
    if engine.dialect.name == "postgresql":
        return PostgresDatabase(engine, pool_size)
    return ThreadedDatabase(engine)


# --- PostgreSQL through asyncpg ----------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameter of each $n, in order
    defaults: dict[str, Any]  # values the statement carries itself (literals in its WHERE)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[n] if n in params else self.defaults[n] for n in self.names]


_DIALECT = AsyncpgDialect()  # type: ignore[no-untyped-call]
_compiled: dict[int, tuple[Any, _Compiled]] = {}
_compile_lock = threading.Lock()


def compile_for_asyncpg(statement: Any) -> _Compiled:
    """The asyncpg SQL of a constant statement, compiled on first use."""
    cached = _compiled.get(id(statement))
    if cached is not None and cached[0] is statement:
        return cached[1]
    compiled = statement.compile(dialect=_DIALECT)
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("a statement for asyncpg cannot hold an expanding IN list")
    names = tuple(compiled.positiontup or ())
    binds = {name: compiled.binds[name] for name in names}
    defaults = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    result = _Compiled(compiled.string, names, defaults)
    with _compile_lock:
        # The statement is kept with its entry so that its id is never reused by another.
        _compiled[id(statement)] = (statement, result)
    return result


def asyncpg_dsn(engine: Engine) -> str:
    """The engine's URL as asyncpg takes it (no ``+driver`` part)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class _PostgresConnection(AsyncConnection):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, statement: Any, params: Mapping[str, Any]) -> None:
        compiled = compile_for_asyncpg(statement)
        await self._conn.execute(compiled.sql, *compiled.args(params))

    async def executemany(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        compiled = compile_for_asyncpg(statement)
        await self._conn.executemany(compiled.sql, [compiled.args(p) for p in params])

    async def all(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        compiled = compile_for_asyncpg(statement)
        return list(await self._conn.fetch(compiled.sql, *compiled.args(params)))


async def _keep_session(_conn: Any) -> None:
    # asyncpg's default reset on release is a round trip (RESET ALL, UNLISTEN *, ...) as
    # dear as the statement itself; these statements change no session state (an open
    # transaction is still rolled back by the pool).
    return None


@contextmanager
def _as_operational_error() -> Iterator[None]:
    """asyncpg's lost and refused connections, and lost deadlocks, as ``OperationalError``.

    The worker hands a job back and retries it on ``OperationalError`` whichever driver
    met the database going away.
    """
    import asyncpg

    try:
        yield
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        # `ALTER DATABASE ... ALLOW_CONNECTIONS false`: "not currently accepting connections".
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
        asyncpg.exceptions.TooManyConnectionsError,
        # A deadlock or serialization failure (class 40) is as transient: the job is handed
        # back and run again, not counted as an unexpected error that fails it after three.
        asyncpg.exceptions.TransactionRollbackError,
        OSError,
    ) as err:
        raise OperationalError("asyncpg", None, err) from err


class PostgresDatabase(AsyncDatabase):
    """Statements compiled for asyncpg, on a pool opened in the running loop."""

    def __init__(self, engine: Engine, pool_size: int) -> None:
        super().__init__(engine)
        self._pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _acquire_pool(self) -> Any:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        asyncpg_dsn(self.engine),
                        # All opened at once (``warm_up``): a connection opened in the
                        # middle of a wave of calls is a wait every call behind it shares.
                        min_size=self._pool_size,
                        max_size=self._pool_size,
                        # Statements are prepared once per connection and reused.
                        statement_cache_size=256,
                        reset=_keep_session,
                    )
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        with _as_operational_error():
            pool = await self._acquire_pool()
            async with pool.acquire() as conn:
                yield _PostgresConnection(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        with _as_operational_error():
            pool = await self._acquire_pool()
            async with pool.acquire() as conn, conn.transaction():
                yield _PostgresConnection(conn)

    async def executemany(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        # asyncpg's executemany is atomic by itself: no BEGIN and COMMIT round trips.
        async with self.connection() as conn:
            await conn.executemany(statement, params)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# --- Any other database, through the blocking engine ----------------------------------------


class _ThreadedConnection(AsyncConnection):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Any, params: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._conn.execute, statement, dict(params))

    async def executemany(self, statement: Any, params: Sequence[Mapping[str, Any]]) -> None:
        await asyncio.to_thread(self._conn.execute, statement, [dict(p) for p in params])

    async def all(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        def rows() -> list[Row]:
            return [r._mapping for r in self._conn.execute(statement, dict(params))]

        return await asyncio.to_thread(rows)


class ThreadedDatabase(AsyncDatabase):
    """The blocking engine in threads, one statement or transaction at a time per process.

    SQLite has one writer at a time. With 80 calls in flight a worker's statements queued on
    the file's lock inside their pooled connections until the pool ran dry ("QueuePool limit
    reached") and the coordinator's own writes timed out ("database is locked"). Taking turns
    here keeps one connection of this process at the file at a time; the busy timeout only
    arbitrates between processes.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _turn(self) -> asyncio.Lock:
        # One lock per event loop: a lock waited on in one loop cannot be used in another.
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Lock())
        return self._turns[1]

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn():
            conn = await asyncio.to_thread(autocommit(self.engine).connect)
            try:
                yield _ThreadedConnection(conn)
            finally:
                await asyncio.to_thread(conn.close)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn():
            conn = await asyncio.to_thread(self.engine.connect)
            try:
                await asyncio.to_thread(conn.begin)
                yield _ThreadedConnection(conn)
                await asyncio.to_thread(conn.commit)
            finally:
                # Rolls back what was not committed.
                await asyncio.to_thread(conn.close)

    async def run_sync(self, work: Callable[[Engine], T]) -> T:
        """``work(engine)`` in a thread, in turn with this process's other statements."""
        async with self._turn():
            return await asyncio.to_thread(work, self.engine)
