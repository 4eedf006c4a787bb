"""The coordinator vacuums the tally's delta table itself: autovacuum may be off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lusifer.store.engines import create_tables, get_engine
from lusifer.store.vacuum import vacuum_queue_tables
from tests.integration.services import postgres_schema


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with postgres_schema("lusifer_vacuum") as url:
        engine = get_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


def _vacuums(engine: Engine) -> int:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.execute(
                text(
                    "SELECT vacuum_count FROM pg_stat_user_tables "
                    "WHERE relname = 'jobtallydelta' AND schemaname = current_schema()"
                )
            ).scalar_one()
        )


@pytest.mark.integration
def test_the_delta_table_is_vacuumed(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobtallydelta (run_id, kind, state, delta) "
                "SELECT 'r', 'rating', 'done', 1 FROM generate_series(1, 5000)"
            )
        )
        conn.execute(text("DELETE FROM jobtallydelta"))
    vacuum_queue_tables(pg_engine)
    deadline = time.monotonic() + 15
    while _vacuums(pg_engine) < 1:  # statistics reach the view within a second or so
        assert time.monotonic() < deadline, "no VACUUM of jobtallydelta was recorded"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_locked_table_is_skipped_not_waited_for(pg_engine: Engine) -> None:
    with pg_engine.connect() as holder:
        tx = holder.begin()
        holder.execute(text("LOCK TABLE jobtallydelta IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        vacuum_queue_tables(pg_engine)
        assert time.monotonic() - started < 5
        tx.rollback()


def test_sqlite_has_nothing_to_vacuum(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'v.db'}")
    create_tables(engine)
    vacuum_queue_tables(engine)  # a no-op, no error
