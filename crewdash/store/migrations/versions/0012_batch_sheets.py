"""Sheets: the file a batch ran one crew per row of, and how its columns filled the inputs.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_sheets",
        sa.Column(
            "batch_id",
            sa.String(40),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("sheet_name", sa.String(300), nullable=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("input_map", sa.Text, nullable=False),
        sa.Column("required", sa.Text, nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_table("batch_sheets")
