"""Tables of the gateway store (SQLAlchemy Core). The migrations in ``migrations/`` create them.

What is stored: meters (certificates and status), groups and membership, negotiation sessions with
every accepted round message and every coordinator broadcast, committed epochs (public key ids),
an append-only hash-chained audit log, an event feed for observers, and relayed group data
ciphertexts. What is never stored: a group key, an ephemeral scalar, or a meter's private key.

Times are unix milliseconds (BIGINT) so SQLite and PostgreSQL agree byte for byte.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

meters = Table(
    "meters",
    metadata,
    Column("meter_id", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("kid", LargeBinary(8), nullable=False, unique=True),
    Column("cert_pem", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("serial", String(48), nullable=False),
    Column("not_after", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("enrolled_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("revoke_reason", String(64)),
)

groups = Table(
    "groups",
    metadata,
    Column("group_id", String(64), primary_key=True),
    Column("suite", String(8), nullable=False),
    Column("mode", Integer, nullable=False),
    Column("rekey_interval_s", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("current_epoch", BigInteger, nullable=False, default=0),
    Column("current_key_id", LargeBinary(8)),
    Column("last_rekey_at", BigInteger),
    Column("roster_statement", LargeBinary),  # strict roster profile: the operator's newest statement
    Column("keyless_rekey_at", BigInteger),  # when a keyless member last got a rekey (rate limit)
)

memberships = Table(
    "memberships",
    metadata,
    Column("group_id", String(64), ForeignKey("groups.group_id"), primary_key=True),
    Column("meter_id", String(64), ForeignKey("meters.meter_id"), primary_key=True),
    Column("status", String(16), nullable=False),  # active | lagging | removed
    Column("added_at", BigInteger, nullable=False),
    Column("removed_at", BigInteger),
    # the newest Start this member refused, as it reported it (signed): "reason: detail"; cleared
    # when an epoch it took part in commits
    Column("refusal", String(280)),
    Column("refusal_epoch", BigInteger),
    Column("refused_at", BigInteger),
)

# Membership changes waiting for the next session (joins are batched for a short window).
pending_changes = Table(
    "pending_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_id", String(64), ForeignKey("groups.group_id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # join | leave | revoke | manual | periodic | rejoin | keyless
    Column("meter_id", String(64)),
    Column("requested_at", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("sid", LargeBinary(16), primary_key=True),
    Column("group_id", String(64), ForeignKey("groups.group_id"), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # round1 | round2 | confirm | committed | aborted
    Column("trigger", String(64), nullable=False),
    Column("start_msg", LargeBinary, nullable=False),
    Column("members", Text, nullable=False),  # JSON list of member ids, ring order
    Column("started_at", BigInteger, nullable=False),
    Column("deadline", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Column("result", String(64)),
    Column("excluded", Text),  # JSON list
    Column("version", Integer, nullable=False, default=0),
    Index("ix_sessions_group_state", "group_id", "state"),
)

session_messages = Table(
    "session_messages",
    metadata,
    Column("sid", LargeBinary(16), ForeignKey("sessions.sid"), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("received_at", BigInteger, nullable=False),
)

session_broadcasts = Table(
    "session_broadcasts",
    metadata,
    Column("sid", LargeBinary(16), ForeignKey("sessions.sid"), primary_key=True),
    Column("kind", String(16), primary_key=True),  # start | bundle1 | bundle2 | commit | abort
    Column("data", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

epochs = Table(
    "epochs",
    metadata,
    Column("group_id", String(64), ForeignKey("groups.group_id"), primary_key=True),
    Column("epoch", BigInteger, primary_key=True),  # the primary key forbids two key ids per epoch
    Column("key_id", LargeBinary(8), nullable=False),
    Column("sid", LargeBinary(16), nullable=False),
    Column("members", Text, nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("committed_at", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# One row: the head of the audit chain, locked while appending so replicas never fork the chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("group_id", String(64)),
    Column("meter_id", String(64)),
    Column("kind", String(32), nullable=False),
    Column("body", Text, nullable=False),  # JSON (metadata only: never a key)
    Column("data", LargeBinary),  # a coordinator message or group data ciphertext, when relevant
    Index("ix_events_group", "group_id", "id"),
)

group_data = Table(
    "group_data",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_id", String(64), ForeignKey("groups.group_id"), nullable=False),
    Column("key_id", LargeBinary(8), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("content_type", Integer, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),  # SHA-256 of data: each message relayed once
    Column("data", LargeBinary, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("group_id", "digest", name="uq_group_data_once"),
    Index("ix_group_data_group", "group_id", "id"),
)
