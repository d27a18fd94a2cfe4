"""Owners with heartbeats, so a dead server's batches end wherever and however it ran.

Batches keep their `owner` column: new ones hold an owner id from this table; older ones
(`host:pid`) have no row and count as silent since their creation.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False, index=True),
    )
    # the sweep looks for unfinished batches every few seconds on every server
    op.create_index("ix_batches_finished_at", "batches", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_batches_finished_at", table_name="batches")
    op.drop_table("owners")
