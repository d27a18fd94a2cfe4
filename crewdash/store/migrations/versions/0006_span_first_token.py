"""When each streamed LLM call's first token arrived (time to first token, generation time).

Revision ID: 0006
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spans") as spans:
        spans.add_column(sa.Column("first_token_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spans") as spans:
        spans.drop_column("first_token_at")
