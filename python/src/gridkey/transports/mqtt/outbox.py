"""The bridges' durable outbox: a SQLite file in the data dir that outlives broker outages and crashes.

Why its own file and not the gateway's store: the outbox is this gateway host's queue toward its
uplink, not shared state (a PostgreSQL replica set shares the store, each host has its own
uplink), and it must keep accepting while the store is busy or remote.

Guarantees (docs/bridges.md):
* **Nothing accepted is lost.** :meth:`Outbox.accept` inserts a gateway event's messages *and*
  advances the bridge's cursor (the highest gateway event id it took) in one transaction, with
  ``synchronous=FULL``; a crash before it leaves the cursor behind, and the bridge takes the event
  again from the gateway's store on restart (a message still queued is not queued twice).
  Messages leave the table only in :meth:`ack` (after a
  successful PUBACK) or :meth:`dead_letter` (with the reason).
* **At least once, deduplicable.** Each message has a stable id (gateway, event id, index): the
  same event always yields the same ids, so a consumer can drop repeats.
* **In order per bridge.** ``seq`` increases; the publisher sends in ``seq`` order.
* **Bounded.** Per bridge by count and bytes; when full, ``reject-new`` refuses what arrives and
  ``drop-oldest`` drops the oldest queued; both are counted (never silent).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import OutboxLimits

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    bridge     TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_messages_bridge ON messages (bridge, seq);
CREATE UNIQUE INDEX IF NOT EXISTS ux_messages_id ON messages (bridge, msg_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    bridge     TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    failed_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    bridge   TEXT PRIMARY KEY,
    cursor   INTEGER,                 -- the last gateway event id accepted (NULL: none yet)
    count    INTEGER NOT NULL DEFAULT 0,
    bytes    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    bridge TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (bridge, name)
);
"""

# counter names (metrics, /v1/bridges and the docs read these)
ENQUEUED, PUBLISHED, REJECTED_FULL, DROPPED_FULL, DEAD_LETTERED = (
    "enqueued",
    "published",
    "rejected_full",
    "dropped_full",
    "dead_lettered",
)


@dataclass(frozen=True)
class OutMessage:
    msg_id: str
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class Queued:
    seq: int
    msg_id: str
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: int
    attempts: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Outbox:
    """All bridges' queues in one SQLite file; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a power cut, not only a crash, keeps what was accepted
        self._db.executescript(SCHEMA)
        self.path.chmod(0o600)  # it can hold readings and the topology of the grid
        self._lock = threading.Lock()
        row = self._db.execute("SELECT value FROM meta WHERE name = 'instance'").fetchone()
        self.instance_id = row[0] if row else self.renew_instance_id()
        # Removals (acks) on a connection of their own at synchronous=NORMAL: a removal lost to a
        # power cut only means the message goes again under its id, which at-least-once allows;
        # an acceptance lost would be a message lost, so acceptances keep FULL.
        self._rm = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._rm.execute("PRAGMA synchronous=NORMAL")
        self._rm_lock = threading.Lock()

    def renew_instance_id(self) -> str:
        """A random id for this outbox, part of every message id: two sites (or one site's
        store restored from a backup) never give the same id to different messages."""
        self.instance_id = secrets.token_hex(4)
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('instance', ?)", (self.instance_id,))
        return self.instance_id

    def reset_cursor(self, bridge: str, cursor: int) -> None:
        with self._lock:
            self._db.execute("UPDATE queues SET cursor = ? WHERE bridge = ?", (cursor, bridge))

    def close(self) -> None:
        with self._lock, self._rm_lock:
            self._db.close()
            self._rm.close()

    # --- intake ---------------------------------------------------------------------------------

    def cursor(self, bridge: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT cursor FROM queues WHERE bridge = ?", (bridge,)).fetchone()
        return row[0] if row else None

    def accept(self, bridge: str, messages: Iterable[OutMessage], cursor: int, limits: OutboxLimits) -> dict[str, int]:
        """Queue ``messages`` and move the cursor to ``cursor``, atomically. Returns what happened."""
        stats = {ENQUEUED: 0, REJECTED_FULL: 0, DROPPED_FULL: 0}
        ts = now_ms()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO queues (bridge, cursor) VALUES (?, NULL)", (bridge,))
                count, size = db.execute("SELECT count, bytes FROM queues WHERE bridge = ?", (bridge,)).fetchone()
                for m in messages:
                    need = len(m.payload)
                    if count + 1 > limits.max_messages or size + need > limits.max_bytes:
                        if limits.full == "reject-new" or need > limits.max_bytes:
                            stats[REJECTED_FULL] += 1
                            continue
                        while count and (count + 1 > limits.max_messages or size + need > limits.max_bytes):
                            seq, old = db.execute(
                                "SELECT seq, length(payload) FROM messages WHERE bridge = ? ORDER BY seq LIMIT 1",
                                (bridge,),
                            ).fetchone()
                            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                            count, size = count - 1, size - old
                            stats[DROPPED_FULL] += 1
                    cur = db.execute(
                        "INSERT OR IGNORE INTO messages (bridge, msg_id, kind, topic, payload, qos, retain, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (bridge, m.msg_id, m.kind, m.topic, m.payload, m.qos, int(m.retain), ts),
                    )
                    if cur.rowcount:  # 0: still queued from an earlier acceptance (a replay after a crash)
                        count, size = count + 1, size + need
                        stats[ENQUEUED] += 1
                db.execute(
                    "UPDATE queues SET cursor = max(coalesce(cursor, 0), ?), count = ?, bytes = ? WHERE bridge = ?",
                    (cursor, count, size, bridge),
                )
                self._bump(bridge, stats)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stats

    # --- publishing -----------------------------------------------------------------------------

    def pending(self, bridge: str, after_seq: int = 0, limit: int = 500) -> list[Queued]:
        """Queued messages in order, after ``after_seq``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, msg_id, kind, topic, payload, qos, retain, created_at, attempts FROM messages"
                " WHERE bridge = ? AND seq > ? ORDER BY seq LIMIT ?",
                (bridge, after_seq, limit),
            ).fetchall()
        return [Queued(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], bool(r[6]), r[7], r[8]) for r in rows]

    def attempted(self, seqs: Iterable[int]) -> None:
        """Count a send of each message (a poison message is dead-lettered after MAX_ATTEMPTS)."""
        seqs = list(seqs)
        if not seqs:
            return
        with self._rm_lock:
            sql = "UPDATE messages SET attempts = attempts + 1 WHERE seq IN (%s)" % ",".join("?" * len(seqs))  # noqa: S608, UP031 - placeholders only
            self._rm.execute(sql, seqs)

    def ack(self, bridge: str, seqs: Iterable[int]) -> int:
        """Remove messages the broker acknowledged (a successful PUBACK); returns how many were queued."""
        return self._remove(bridge, list(seqs), None)

    def dead_letter(self, bridge: str, seq: int, reason: str) -> int:
        """Move a message the broker refused (or the profile forbids) to the dead letters, with why."""
        return self._remove(bridge, [seq], reason)

    def _remove(self, bridge: str, seqs: list[int], reason: str | None) -> int:
        if not seqs:
            return 0
        with self._rm_lock:
            db = self._rm
            db.execute("BEGIN IMMEDIATE")
            try:
                removed = size = 0
                for i in range(0, len(seqs), 500):
                    chunk = seqs[i : i + 500]
                    marks = ",".join("?" * len(chunk))  # placeholders only: every value is bound
                    where = f"FROM messages WHERE bridge = ? AND seq IN ({marks})"
                    if reason is not None:
                        db.execute(
                            "INSERT INTO dead_letters (bridge, msg_id, kind, topic, payload, reason, created_at,"
                            " failed_at) SELECT bridge, msg_id, kind, topic, payload, ?, created_at, ? " + where,
                            (reason[:500], now_ms(), bridge, *chunk),
                        )
                    # a seq not found was acknowledged twice (a resend both copies of which arrived)
                    gone = db.execute("DELETE " + where + " RETURNING length(payload)", (bridge, *chunk)).fetchall()
                    removed += len(gone)
                    size += sum(n for (n,) in gone)
                db.execute(
                    "UPDATE queues SET count = count - ?, bytes = bytes - ? WHERE bridge = ?", (removed, size, bridge)
                )
                self._bump(bridge, {DEAD_LETTERED if reason is not None else PUBLISHED: removed}, db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    # --- what it holds --------------------------------------------------------------------------

    def depth(self, bridge: str) -> tuple[int, int]:
        """(messages, bytes) queued for ``bridge``."""
        with self._lock:
            row = self._db.execute("SELECT count, bytes FROM queues WHERE bridge = ?", (bridge,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def counters(self, bridge: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters WHERE bridge = ?", (bridge,)).fetchall()
        out = dict.fromkeys((ENQUEUED, PUBLISHED, REJECTED_FULL, DROPPED_FULL, DEAD_LETTERED), 0)
        out.update(dict(rows))
        return out

    def dead_letters(self, bridge: str, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT msg_id, kind, topic, reason, failed_at FROM dead_letters"
                " WHERE bridge = ? ORDER BY id DESC LIMIT ?",
                (bridge, limit),
            ).fetchall()
        return [{"msg_id": r[0], "kind": r[1], "topic": r[2], "reason": r[3], "failed_at": r[4]} for r in rows]

    def _bump(self, bridge: str, stats: dict[str, int], db: sqlite3.Connection | None = None) -> None:
        for name, n in stats.items():
            if n:
                (db or self._db).execute(
                    "INSERT INTO counters (bridge, name, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (bridge, name) DO UPDATE SET value = value + excluded.value",
                    (bridge, name, n),
                )
