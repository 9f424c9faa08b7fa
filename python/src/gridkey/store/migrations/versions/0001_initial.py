"""Initial schema: meters, groups, membership, sessions, epochs, audit chain, events, group data.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

ID = sa.String(64)
MS = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "meters",
        sa.Column("meter_id", ID, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kid", sa.LargeBinary(8), nullable=False, unique=True),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(48), nullable=False),
        sa.Column("not_after", MS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("enrolled_at", MS, nullable=False),
        sa.Column("revoked_at", MS),
        sa.Column("revoke_reason", sa.String(64)),
    )
    op.create_table(
        "groups",
        sa.Column("group_id", ID, primary_key=True),
        sa.Column("suite", sa.String(8), nullable=False),
        sa.Column("mode", sa.Integer, nullable=False),
        sa.Column("rekey_interval_s", sa.Integer, nullable=False),
        sa.Column("created_at", MS, nullable=False),
        sa.Column("current_epoch", MS, nullable=False),
        sa.Column("current_key_id", sa.LargeBinary(8)),
        sa.Column("last_rekey_at", MS),
    )
    op.create_table(
        "memberships",
        sa.Column("group_id", ID, sa.ForeignKey("groups.group_id"), primary_key=True),
        sa.Column("meter_id", ID, sa.ForeignKey("meters.meter_id"), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added_at", MS, nullable=False),
        sa.Column("removed_at", MS),
    )
    op.create_table(
        "pending_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", ID, sa.ForeignKey("groups.group_id"), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("meter_id", ID),
        sa.Column("requested_at", MS, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("sid", sa.LargeBinary(16), primary_key=True),
        sa.Column("group_id", ID, sa.ForeignKey("groups.group_id"), nullable=False),
        sa.Column("epoch", MS, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("start_msg", sa.LargeBinary, nullable=False),
        sa.Column("members", sa.Text, nullable=False),
        sa.Column("started_at", MS, nullable=False),
        sa.Column("deadline", MS, nullable=False),
        sa.Column("ended_at", MS),
        sa.Column("result", sa.String(64)),
        sa.Column("excluded", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_sessions_group_state", "sessions", ["group_id", "state"])
    op.create_table(
        "session_messages",
        sa.Column("sid", sa.LargeBinary(16), sa.ForeignKey("sessions.sid"), primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("received_at", MS, nullable=False),
    )
    op.create_table(
        "session_broadcasts",
        sa.Column("sid", sa.LargeBinary(16), sa.ForeignKey("sessions.sid"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", MS, nullable=False),
    )
    op.create_table(
        "epochs",
        sa.Column("group_id", ID, sa.ForeignKey("groups.group_id"), primary_key=True),
        sa.Column("epoch", MS, primary_key=True),
        sa.Column("key_id", sa.LargeBinary(8), nullable=False),
        sa.Column("sid", sa.LargeBinary(16), nullable=False),
        sa.Column("members", sa.Text, nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("started_at", MS, nullable=False),
        sa.Column("committed_at", MS, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("seq", MS, primary_key=True, autoincrement=False),
        sa.Column("ts", MS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", MS, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.bulk_insert(
        sa.table("audit_head", sa.column("id"), sa.column("seq"), sa.column("hash")),
        [{"id": 1, "seq": 0, "hash": bytes(32)}],
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", MS, nullable=False),
        sa.Column("group_id", ID),
        sa.Column("meter_id", ID),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary),
    )
    op.create_index("ix_events_group", "events", ["group_id", "id"])
    op.create_table(
        "group_data",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", ID, sa.ForeignKey("groups.group_id"), nullable=False),
        sa.Column("key_id", sa.LargeBinary(8), nullable=False),
        sa.Column("sender", ID, nullable=False),
        sa.Column("content_type", sa.Integer, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("received_at", MS, nullable=False),
        sa.UniqueConstraint("group_id", "digest", name="uq_group_data_once"),
    )
    op.create_index("ix_group_data_group", "group_data", ["group_id", "id"])
