"""Readiness kept when a job ends, and job counts kept as a tally: polls that do not grow.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

The coordinator polls a run's ready jobs and its job counts several times a second. Both were
computed over every job of the run: readiness as ``depends_on IN (SELECT id ... done)``, which
PostgreSQL turned into a pending x done nested loop past ~200k done jobs (one poll took 13
minutes), and the counts as a GROUP BY over the whole run (a third of a second at 633k jobs).

Now the database keeps both as jobs change, whoever changes them (worker, coordinator, a
Batch API round, a resume):

- ``job.waiting`` is true while a job's dependency is not done; a trigger clears it on the
  jobs that waited when their dependency becomes done, and a partial index holds exactly the
  pending jobs that do not wait. A poll reads those rows only.
- Triggers append the change of every statement that inserts, deletes or changes the state of
  jobs to ``jobtallydelta`` (one row per run, kind and state it changed; appended, so workers
  never queue on a counter row); the coordinator folds them into ``jobtally``.

Existing rows get their ``waiting`` flag and their tally here, while the triggers' lock keeps
writers out, so no change falls between the count and the first delta.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_READY_WHERE = "state = 'pending' AND NOT waiting"

# PostgreSQL: statement-level triggers with transition tables, one delta row per run, kind and
# state a statement changed (a plan's INSERT of 1,000 jobs writes two rows, not 1,000).
_PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION lusifer_job_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobtallydelta (run_id, kind, state, delta)
    SELECT run_id, kind, state, count(*) FROM new_rows GROUP BY run_id, kind, state;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lusifer_job_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobtallydelta (run_id, kind, state, delta)
    SELECT run_id, kind, state, -count(*) FROM old_rows GROUP BY run_id, kind, state;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lusifer_job_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Old rows count -1 and new rows +1; a row whose state did not change cancels out. No
    -- join of the two tables: they have no statistics, and a nested loop over a resume's
    -- million rows would never end.
    INSERT INTO jobtallydelta (run_id, kind, state, delta)
    SELECT run_id, kind, state, sum(delta) FROM (
        SELECT run_id, kind, state, -1 AS delta FROM old_rows
        UNION ALL
        SELECT run_id, kind, state, 1 AS delta FROM new_rows
    ) AS changes
    GROUP BY run_id, kind, state HAVING sum(delta) <> 0;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION lusifer_job_release_waiting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job SET waiting = false WHERE depends_on = NEW.id AND waiting;
    RETURN NULL;
END $$;
"""
_PG_TRIGGERS = (
    "CREATE TRIGGER job_tally_insert AFTER INSERT ON job REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION lusifer_job_tally_insert()",
    "CREATE TRIGGER job_tally_delete AFTER DELETE ON job REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION lusifer_job_tally_delete()",
    "CREATE TRIGGER job_tally_update AFTER UPDATE ON job "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION lusifer_job_tally_update()",
    "CREATE TRIGGER job_release_waiting AFTER UPDATE OF state ON job FOR EACH ROW "
    "WHEN (NEW.state = 'done' AND OLD.state <> 'done') "
    "EXECUTE FUNCTION lusifer_job_release_waiting()",
)
_PG_DROP = (
    "DROP TRIGGER IF EXISTS job_tally_insert ON job",
    "DROP TRIGGER IF EXISTS job_tally_delete ON job",
    "DROP TRIGGER IF EXISTS job_tally_update ON job",
    "DROP TRIGGER IF EXISTS job_release_waiting ON job",
    "DROP FUNCTION IF EXISTS lusifer_job_tally_insert()",
    "DROP FUNCTION IF EXISTS lusifer_job_tally_delete()",
    "DROP FUNCTION IF EXISTS lusifer_job_tally_update()",
    "DROP FUNCTION IF EXISTS lusifer_job_release_waiting()",
)
# SQLite (local mode's file): row-level triggers, the same rules; one writer at a time, so
# appending a row per change costs nothing that waits.
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER job_tally_insert AFTER INSERT ON job BEGIN "
    "INSERT INTO jobtallydelta (run_id, kind, state, delta) "
    "VALUES (NEW.run_id, NEW.kind, NEW.state, 1); END",
    "CREATE TRIGGER job_tally_delete AFTER DELETE ON job BEGIN "
    "INSERT INTO jobtallydelta (run_id, kind, state, delta) "
    "VALUES (OLD.run_id, OLD.kind, OLD.state, -1); END",
    "CREATE TRIGGER job_tally_update AFTER UPDATE OF state ON job "
    "WHEN NEW.state <> OLD.state BEGIN "
    "INSERT INTO jobtallydelta (run_id, kind, state, delta) "
    "VALUES (OLD.run_id, OLD.kind, OLD.state, -1), (NEW.run_id, NEW.kind, NEW.state, 1); END",
    "CREATE TRIGGER job_release_waiting AFTER UPDATE OF state ON job "
    "WHEN NEW.state = 'done' AND OLD.state <> 'done' BEGIN "
    "UPDATE job SET waiting = 0 WHERE depends_on = NEW.id AND waiting; END",
)
_SQLITE_DROP = tuple(
    f"DROP TRIGGER IF EXISTS {name}"
    for name in ("job_tally_insert", "job_tally_delete", "job_tally_update", "job_release_waiting")
)


def upgrade() -> None:
    op.create_table(
        "jobtally",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("n", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("run_id", "kind", "state"),
    )
    op.create_table(
        "jobtallydelta",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobtallydelta_run_id", "jobtallydelta", ["run_id"])
    with op.batch_alter_table("job") as batch:
        batch.add_column(
            sa.Column("waiting", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE job SET waiting = true WHERE depends_on IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM job AS dependency WHERE dependency.id = job.depends_on "
        "AND dependency.state = 'done')"
    )
    op.create_index(
        "ix_job_ready",
        "job",
        ["run_id"],
        postgresql_where=sa.text(_READY_WHERE),
        sqlite_where=sa.text(_READY_WHERE),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTIONS)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    # After the triggers: their lock keeps writers out until this transaction commits.
    op.execute(
        "INSERT INTO jobtally (run_id, kind, state, n) "
        "SELECT run_id, kind, state, count(*) FROM job GROUP BY run_id, kind, state"
    )


def downgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DROP if is_pg else _SQLITE_DROP:
        op.execute(statement)
    op.drop_index("ix_job_ready", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("waiting")
    op.drop_index("ix_jobtallydelta_run_id", table_name="jobtallydelta")
    op.drop_table("jobtallydelta")
    op.drop_table("jobtally")
