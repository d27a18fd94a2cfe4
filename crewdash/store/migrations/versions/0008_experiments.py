"""Experiments (a batch of topics × variants, with its spec), their cells' judge scores and
marks, and the response cache shared by every process.

Revision ID: 0008
Revises: 0005 (the lead re-chains it after the migrations merged before it)
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column(
            "id", sa.String(40), sa.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "experiment_cells",
        sa.Column(
            "experiment_id",
            sa.String(40),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("score", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("judge_error", sa.Text, nullable=True),
        sa.Column("mark", sa.String(10), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_table(
        "llm_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("llm_cache")
    op.drop_table("experiment_cells")
    op.drop_table("experiments")
