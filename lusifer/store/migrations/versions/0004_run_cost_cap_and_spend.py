"""The cost cap of a run and what it has spent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

``lusifer run --max-cost USD`` stops a run when the spend of its new LLM calls reaches the cap
and leaves it resumable. Workers check the run's recorded spend before every new call, so the
cap and the spend live on the run row. Runs made before this revision have no cap and have
spent 0 as far as the cap is concerned (their calls keep their own recorded costs).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("max_cost_usd", sa.Float(), nullable=True))
        # A server default fills the existing rows of a NOT NULL column.
        batch.add_column(sa.Column("spent_usd", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("spent_usd")
        batch.drop_column("max_cost_usd")
