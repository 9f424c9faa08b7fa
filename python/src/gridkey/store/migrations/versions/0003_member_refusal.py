"""A membership keeps the newest refusal its member reported (signed), for operators and LwM2M;
a group keeps when a keyless member last got a rekey (the rate limit, shared by replicas).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:  # batch: SQLite cannot ALTER in place
        batch.add_column(sa.Column("refusal", sa.String(280), nullable=True))
        batch.add_column(sa.Column("refusal_epoch", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("refused_at", sa.BigInteger, nullable=True))
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("keyless_rekey_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("keyless_rekey_at")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("refused_at")
        batch.drop_column("refusal_epoch")
        batch.drop_column("refusal")
