"""Each crew's inputs, task outputs and written files; each batch's blueprint kind.

Revision ID: 0005
Revises: 0003 (0004 is being added on another branch; the lead re-chains this one after it)
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("crew_runs") as crews:
        crews.add_column(sa.Column("inputs", sa.Text, nullable=False, server_default="{}"))
        crews.add_column(sa.Column("tasks", sa.Text, nullable=False, server_default="[]"))
        crews.add_column(sa.Column("files", sa.Text, nullable=False, server_default="[]"))
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="yaml"))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("kind")
    with op.batch_alter_table("crew_runs") as crews:
        crews.drop_column("files")
        crews.drop_column("tasks")
        crews.drop_column("inputs")
