"""Benchmark reports, kept for the Benchmark page's history.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bench_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("reports", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bench_runs")
