"""An index on the job a job waits for; no second index on a rating's run and fold.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

A profile job that ends takes the rating jobs waiting for it (``depends_on``) in one
statement, once per user and fold; without an index each of those scanned the job table.
The simulated ratings' index on (run, fold) repeated the first columns of their unique key,
and PostgreSQL's generic plan for storing one rating chose it: a scan of the whole fold for
every rating stored.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_job_depends_on", "job", ["depends_on"])
    op.drop_index("ix_simrating_run_fold", table_name="simulatedrating")


def downgrade() -> None:
    op.create_index("ix_simrating_run_fold", "simulatedrating", ["run_id", "fold"])
    op.drop_index("ix_job_depends_on", table_name="job")
