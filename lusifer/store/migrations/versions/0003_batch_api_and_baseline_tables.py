"""The tables of the Batch API runs (llmbatch, llmbatchline) and of the baselines that run on
the workers (foldsplit, baselineprediction).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Both features were merged while tables were still made by create_all, so a database adopted at
0001 may hold these tables already: like 0001, this revision creates only the absent ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _absent(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _absent("baselineprediction"):
        _create_baselineprediction()
    if _absent("foldsplit"):
        _create_foldsplit()
    if _absent("llmbatch"):
        _create_llmbatch()
    if _absent("llmbatchline"):
        _create_llmbatchline()


def _create_baselineprediction() -> None:
    op.create_table(
        "baselineprediction",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("split_digest", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("fit_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    with op.batch_alter_table("baselineprediction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_baselineprediction_split_digest"), ["split_digest"], unique=False
        )


def _create_foldsplit() -> None:
    op.create_table(
        "foldsplit",
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("fold", sa.String(), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_test", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def _create_llmbatch() -> None:
    op.create_table(
        "llmbatch",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("input_file_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("collected", sa.Boolean(), nullable=False),
        sa.Column("output_file_id", sa.String(), nullable=True),
        sa.Column("error_file_id", sa.String(), nullable=True),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("llmbatch", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_llmbatch_run_id"), ["run_id"], unique=False)


def _create_llmbatchline() -> None:
    op.create_table(
        "llmbatchline",
        sa.Column("batch_id", sa.String(), nullable=False),
        sa.Column("call_key", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_text", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "call_key"),
    )
    with op.batch_alter_table("llmbatchline", schema=None) as batch_op:
        batch_op.create_index("ix_llmbatchline_run_key", ["run_id", "call_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("llmbatchline", schema=None) as batch_op:
        batch_op.drop_index("ix_llmbatchline_run_key")

    op.drop_table("llmbatchline")
    with op.batch_alter_table("llmbatch", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llmbatch_run_id"))

    op.drop_table("llmbatch")
    op.drop_table("foldsplit")
    with op.batch_alter_table("baselineprediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_baselineprediction_split_digest"))

    op.drop_table("baselineprediction")
