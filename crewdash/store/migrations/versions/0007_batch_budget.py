"""Each batch's budget (USD or tokens), so the history and other servers show the spend against it.

Revision ID: 0007
Revises: 0006 (the lead re-chains this one if other branches add more)
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("budget_usd", sa.Float, nullable=True))
        batches.add_column(sa.Column("budget_tokens", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("budget_tokens")
        batches.drop_column("budget_usd")
