"""The schema as it was when migrations began (runs, jobs, results, LLM calls, environments).

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Databases made before migrations existed were created with ``SQLModel.metadata.create_all``;
some of them predate tables added later (the environment tables). So this revision creates only
the tables that are absent: applied to such a database it adopts the tables it finds and adds
the missing ones, and the database continues from here like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _create_run() -> None:
    op.create_table(
        "run",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("prompt_set", sa.String(), nullable=False),
        sa.Column("prompt_version", sa.String(), nullable=False),
        sa.Column("prompt_hash", sa.String(), nullable=False),
        sa.Column("prompts_json", sa.Text(), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def _create_itemtext() -> None:
    op.create_table(
        "itemtext",
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("genres", sa.String(), nullable=False),
        sa.Column("overview", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("dataset_fingerprint", "item_id"),
    )


def _create_usertext() -> None:
    op.create_table(
        "usertext",
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("info", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_fingerprint", "user_id"),
    )


def _create_job() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("fold", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("depends_on", sa.String(), nullable=True),
        sa.Column("inputs_json", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reasks", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("raw_output", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_run_id", "job", ["run_id"])
    op.create_index("ix_job_run_state", "job", ["run_id", "state"])


def _create_profilestep() -> None:
    op.create_table(
        "profilestep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("fold", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("item_ids_json", sa.String(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("call_key", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "fold", "user_id", "step"),
    )
    op.create_index("ix_profilestep_run_id", "profilestep", ["run_id"])


def _create_simulatedrating() -> None:
    op.create_table(
        "simulatedrating",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("fold", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("true_rating", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "fold", "user_id", "item_id"),
    )
    op.create_index("ix_simrating_run_fold", "simulatedrating", ["run_id", "fold"])


def _create_llmcall() -> None:
    op.create_table(
        "llmcall",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def _create_calluse() -> None:
    op.create_table(
        "calluse",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("call_key", sa.String(), nullable=False),
        sa.Column("fold", sa.String(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "job_id", "call_key"),
    )


def _create_envspec() -> None:
    op.create_table(
        "envspec",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("prompts_json", sa.Text(), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _create_envepisode() -> None:
    op.create_table(
        "envepisode",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("spec_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("history_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_envepisode_spec_id", "envepisode", ["spec_id"])


def _create_envsteprequest() -> None:
    op.create_table(
        "envsteprequest",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("episode_id", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("slate_json", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("ratings_json", sa.Text(), nullable=True),
        sa.Column("missing_json", sa.String(), nullable=True),
        sa.Column("reasks", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(), nullable=True),
        sa.Column("raw_output", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("episode_id", "step"),
    )
    op.create_index("ix_envsteprequest_episode_id", "envsteprequest", ["episode_id"])


def _create_envprofileupdate() -> None:
    op.create_table(
        "envprofileupdate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("item_ids_json", sa.String(), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("call_key", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("episode_id", "step"),
    )
    op.create_index("ix_envprofileupdate_episode_id", "envprofileupdate", ["episode_id"])


_TABLES: dict[str, Callable[[], None]] = {
    "run": _create_run,
    "itemtext": _create_itemtext,
    "usertext": _create_usertext,
    "job": _create_job,
    "profilestep": _create_profilestep,
    "simulatedrating": _create_simulatedrating,
    "llmcall": _create_llmcall,
    "calluse": _create_calluse,
    "envspec": _create_envspec,
    "envepisode": _create_envepisode,
    "envsteprequest": _create_envsteprequest,
    "envprofileupdate": _create_envprofileupdate,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in _TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    for name in reversed(list(_TABLES)):
        op.drop_table(name)
