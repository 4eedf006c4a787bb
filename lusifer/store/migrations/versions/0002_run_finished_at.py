"""Record when a run finished.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

A run stored its start (``created_at``) and its status but not when it ended, so `lusifer runs`
could not say how long a run took, and a run that stopped days ago looked like one that had
just stopped. ``finished_at`` is set when a run becomes done or failed. Runs that finished
before this revision get the time of their last job update, the best record there is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch mode: SQLite alters tables by copying them; PostgreSQL gets a plain ALTER TABLE.
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    run = sa.table(
        "run",
        sa.column("id", sa.String()),
        sa.column("status", sa.String()),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    job = sa.table(
        "job", sa.column("run_id", sa.String()), sa.column("updated_at", sa.DateTime(timezone=True))
    )
    last_job_update = (
        sa.select(sa.func.max(job.c.updated_at)).where(job.c.run_id == run.c.id).scalar_subquery()
    )
    op.execute(
        run.update().where(run.c.status.in_(("done", "failed"))).values(finished_at=last_job_update)
    )


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("finished_at")
