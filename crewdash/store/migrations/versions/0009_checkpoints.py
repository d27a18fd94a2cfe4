"""Resume: each batch's run settings and blueprint version, each crew's latest checkpoint.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resume_batches",
        sa.Column(
            "batch_id",
            sa.String(40),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(80), nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("auto_resumed_at", sa.Float, nullable=True),
    )
    op.create_table(
        "crew_checkpoints",
        sa.Column(
            "run_id",
            sa.String(80),
            sa.ForeignKey("crew_runs.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("batch_id", sa.String(40), nullable=False, index=True),
        sa.Column("saved_at", sa.Float, nullable=False),
        sa.Column("steps", sa.Integer, nullable=False, server_default="0"),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("tasks", sa.Text, nullable=False, server_default="[]"),
        sa.Column("spans", sa.Text, nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_table("crew_checkpoints")
    op.drop_table("resume_batches")
