"""Spend per person and expiring tokens: what a batch was estimated at when it started (it
counts as at least that toward its person's daily cap until it is done), what deleted batches
spent (kept, so deleting is no way around a cap), and when a personal API token expires.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("estimate_usd", sa.Float, nullable=True))
        batch.add_column(sa.Column("estimate_tokens", sa.BigInteger, nullable=True))
    with op.batch_alter_table("api_tokens") as tokens:
        tokens.add_column(sa.Column("expires_at", sa.Float, nullable=True))
    op.create_table(
        "kept_spend",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(320), nullable=False, index=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("kept_spend")
    with op.batch_alter_table("api_tokens") as tokens:
        tokens.drop_column("expires_at")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("estimate_tokens")
        batch.drop_column("estimate_usd")
