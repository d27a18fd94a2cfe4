"""People: who started each batch, personal API tokens (digests only) and the audit log.

Revision ID: 0010
Revises: 0007 (the chain: 0005, 0008, 0009, 0006, 0007, 0010)
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("created_by", sa.String(320), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("created_by_name", sa.String(200), nullable=False, server_default="")
        )
        batch.create_index("ix_batches_created_by", ["created_by"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(320), nullable=False, index=True),
        sa.Column("user_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("user_id", sa.String(320), nullable=False, index=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object", sa.String(200), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    with op.batch_alter_table("batches") as batch:
        batch.drop_index("ix_batches_created_by")
        batch.drop_column("created_by_name")
        batch.drop_column("created_by")
