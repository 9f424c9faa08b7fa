"""Strict roster profile: a group may hold the operator's newest signed roster statement.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:  # batch: SQLite cannot ALTER in place
        batch.add_column(sa.Column("roster_statement", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("roster_statement")
