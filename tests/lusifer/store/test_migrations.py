"""Schema migrations: old databases are upgraded by `lusifer init-db` without losing a row,
databases from before migrations are adopted, and tables.py cannot drift from the migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, text
from sqlmodel import SQLModel

import lusifer.store.tables  # noqa: F401  (the tables on SQLModel.metadata, whatever ran first)
from lusifer.store.migrate import alembic_config, current_revision, head_revision, upgrade_schema
from tests.integration.services import postgres_schema

LUSIFER = str(Path(sys.executable).parent / "lusifer")
ROWS = {"run": 2, "job": 3, "simulatedrating": 4, "llmcall": 2, "calluse": 2, "profilestep": 1}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with postgres_schema("lusifer_mig") as url:
            yield url


def _engine(url: str) -> Engine:
    # A private engine (not lusifer.store.engines's cached one), disposed by each test.
    return create_engine(url)


def _upgrade_to(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def _fill_at_0001(engine: Engine) -> None:
    """Runs, jobs, ratings, profile steps and calls, written with the columns of 0001."""
    stamp = "2026-01-02 03:04:05"
    with engine.begin() as conn:
        for run_id, status in (("old-done", "done"), ("old-running", "running")):
            conn.execute(
                text(
                    "INSERT INTO run (id, created_at, config_json, prompt_set, prompt_version, "
                    "prompt_hash, prompts_json, dataset_fingerprint, status) VALUES "
                    "(:id, :t, '{}', 'lusifer', '1', 'h', '{}', 'fp', :status)"
                ),
                {"id": run_id, "t": stamp, "status": status},
            )
        for n, updated in enumerate(("2026-01-02 05:00:00", "2026-01-02 06:30:00")):
            conn.execute(
                text(
                    "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, "
                    "inputs_json, attempts, reasks, updated_at) VALUES "
                    "(:id, 'old-done', 'u1', 1, 'rating', :n, 'done', '{}', 1, 0, :t)"
                ),
                {"id": f"old-done/u1/1/rating/{n}", "n": n, "t": updated},
            )
        conn.execute(
            text(
                "INSERT INTO job (id, run_id, fold, user_id, kind, chunk, state, inputs_json, "
                "attempts, reasks, updated_at) VALUES ('old-running/u1/1/profile', "
                "'old-running', 'u1', 1, 'profile', 0, 'queued', '{}', 0, 0, :t)"
            ),
            {"t": stamp},
        )
        for item, rating in ((10, 4), (11, 2), (12, None), (13, 5)):
            conn.execute(
                text(
                    "INSERT INTO simulatedrating (run_id, fold, user_id, item_id, true_rating, "
                    "rating, job_id) VALUES ('old-done', 'u1', 1, :item, 3, :rating, 'j')"
                ),
                {"item": item, "rating": rating},
            )
        conn.execute(
            text(
                "INSERT INTO profilestep (run_id, fold, user_id, step, item_ids_json, profile, "
                "explanation, call_key) VALUES ('old-done', 'u1', 1, 0, '[1]', 'p', 'e', 'k1')"
            )
        )
        for key in ("k1", "k2"):
            conn.execute(
                text(
                    "INSERT INTO llmcall (key, model, request_json, response_text, prompt_tokens, "
                    "completion_tokens, cached_tokens, latency_s, cost_usd, created_at) VALUES "
                    "(:key, 'm', '{}', '{}', 10, 5, 0, 0.5, 0.001, :t)"
                ),
                {"key": key, "t": stamp},
            )
            conn.execute(
                text(
                    "INSERT INTO calluse (run_id, job_id, call_key, fold, cached, retries) VALUES "
                    "('old-done', 'j', :key, 'u1', false, 0)"
                ),
                {"key": key},
            )


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ROWS}


def _lusifer(command: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    return subprocess.run(
        [LUSIFER, command],
        env={**env, "LUSIFER_DATABASE_URL": url, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _init_db(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _lusifer("init-db", url, cwd)


def _finished_at(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, finished_at FROM run")).all()
    return {run_id: None if at is None else str(at)[:19] for run_id, at in rows}


def test_init_db_upgrades_a_0001_database_without_losing_rows(
    database_url: str, tmp_path: Path
) -> None:
    engine = _engine(database_url)
    _upgrade_to(engine, "0001")
    _fill_at_0001(engine)
    assert _counts(engine) == ROWS

    result = _init_db(database_url, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"schema upgraded from 0001 to {head_revision()}" in result.stdout
    assert "adopted" not in result.stdout
    assert _counts(engine) == ROWS
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    # 0002 backfills when finished runs ended: their last job update.
    assert _finished_at(engine) == {"old-done": "2026-01-02 06:30:00", "old-running": None}
    again = _init_db(database_url, tmp_path)
    assert again.returncode == 0 and "upgraded" not in again.stdout, again.stdout
    engine.dispose()


@contextmanager
def _scratch_like(url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind, for building the 0001 tables to copy."""
    if url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
    else:
        with postgres_schema("lusifer_scratch") as scratch_url:
            yield scratch_url


def _create_all_of_0001(target: Engine, scratch_url: str, only: set[str] | None = None) -> None:
    """What the code before migrations did: create_all of the tables as they were at 0001."""
    scratch = _engine(scratch_url)
    _upgrade_to(scratch, "0001")
    old = MetaData()
    old.reflect(scratch)
    scratch.dispose()
    old.remove(old.tables["alembic_version"])
    tables = [t for name, t in old.tables.items() if only is None or name in only]
    old.create_all(target, tables=tables)


def test_a_database_made_before_migrations_is_adopted_and_upgraded(
    database_url: str, tmp_path: Path
) -> None:
    engine = _engine(database_url)
    with _scratch_like(database_url, tmp_path) as scratch_url:
        _create_all_of_0001(engine, scratch_url)
    _fill_at_0001(engine)
    with engine.connect() as conn:
        assert current_revision(conn) is None

    result = _init_db(database_url, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "adopted them at 0001" in result.stdout
    assert _counts(engine) == ROWS
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    assert _finished_at(engine)["old-done"] == "2026-01-02 06:30:00"
    engine.dispose()


def test_an_older_pre_migration_database_gets_its_missing_tables(tmp_path: Path) -> None:
    # Databases from before the environment tables existed hold only the batch-run tables.
    engine = _engine(f"sqlite:///{tmp_path / 'older.db'}")
    batch_tables = {"run", "job", "simulatedrating", "profilestep", "llmcall", "calluse"}
    _create_all_of_0001(engine, f"sqlite:///{tmp_path / 'scratch.db'}", only=batch_tables)
    _fill_at_0001(engine)

    outcome = upgrade_schema(engine)

    assert outcome.adopted and outcome.before is None and outcome.after == head_revision()
    assert _counts(engine) == ROWS
    assert _schema_differences(engine, SQLModel.metadata) == []
    engine.dispose()


def test_a_database_made_just_before_migrations_with_every_table_is_adopted(
    database_url: str,
) -> None:
    # The tables of the last create_all code: today's, less what the migrations added since.
    engine = _engine(database_url)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        for added_since in ("finished_at", "max_cost_usd", "spent_usd"):  # 0002 and 0004
            conn.execute(text(f"ALTER TABLE run DROP COLUMN {added_since}"))
        conn.execute(text("DROP INDEX ix_job_depends_on"))  # 0005
        conn.execute(text("CREATE INDEX ix_simrating_run_fold ON simulatedrating (run_id, fold)"))
        conn.execute(text("DROP INDEX ix_job_ready"))  # 0006
        conn.execute(text("ALTER TABLE job DROP COLUMN waiting"))
        conn.execute(text("DROP TABLE jobtally"))
        conn.execute(text("DROP TABLE jobtallydelta"))
    _fill_at_0001(engine)

    outcome = upgrade_schema(engine)

    assert outcome.adopted and outcome.after == head_revision()
    assert _counts(engine) == ROWS
    assert _schema_differences(engine, SQLModel.metadata) == []
    engine.dispose()


def test_commands_that_read_an_old_database_ask_for_init_db(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = _engine(url)
    _upgrade_to(engine, "0001")
    _fill_at_0001(engine)
    result = _lusifer("runs", url, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "older schema (revision 0001" in result.stderr
    assert "lusifer init-db" in result.stderr
    engine.dispose()


def _schema_differences(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def head_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = _engine(f"sqlite:///{tmp_path / 'head.db'}")
        upgrade_schema(engine)
        yield engine
        engine.dispose()
    else:
        with postgres_schema("lusifer_mig") as url:
            engine = _engine(url)
            upgrade_schema(engine)
            yield engine
            engine.dispose()


def test_migrations_create_exactly_the_tables_of_tables_py(head_engine: Engine) -> None:
    """Fails when tables.py gained a table, column or index that no migration creates.

    The fix: `PYTHONPATH=. python -m lusifer.store.migrations revision "what changed"` writes the
    migration (see lusifer/store/migrate.py); read it and commit it with the change to tables.py.
    """
    differences = _schema_differences(head_engine, SQLModel.metadata)
    assert differences == [], (
        "lusifer/store/tables.py and lusifer/store/migrations/versions disagree; "
        "add a migration with "
        f'`python -m lusifer.store.migrations revision "..."`: {differences}'
    )


def test_the_drift_check_notices_a_table_or_column_without_migration(tmp_path: Path) -> None:
    engine = _engine(f"sqlite:///{tmp_path / 'head.db'}")
    upgrade_schema(engine)
    drifted = MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["run"].append_column(Column("owner", String(), nullable=True))
    Table("newthing", drifted, Column("id", Integer, primary_key=True))

    found = {(d[0], getattr(d[-1], "name", None)) for d in _schema_differences(engine, drifted)}

    assert ("add_column", "owner") in found
    assert ("add_table", "newthing") in found
    engine.dispose()
