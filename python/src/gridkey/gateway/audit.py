"""The append-only audit log: every entry's hash covers the previous one.

    hash_k = SHA-256(hash_{k-1} || CBOR([seq, ts, actor, action, subject, details]))

Appending locks the single ``audit_head`` row, so concurrent replicas extend one chain instead of
forking it. ``verify`` recomputes the whole chain; any edited, removed or reordered entry breaks it.
Entries hold metadata only (ids, epochs, key ids, reasons): never key material.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import cbor2
from sqlalchemy import Connection, select, update

from ..store import Store
from ..store.schema import audit, audit_head

GENESIS = bytes(32)


def entry_hash(prev: bytes, seq: int, ts: int, actor: str, action: str, subject: str, details: str) -> bytes:
    body = cbor2.dumps([seq, ts, actor, action, subject, details], canonical=True)
    return hashlib.sha256(prev + body).digest()


def append(store: Store, conn: Connection, *, ts: int, actor: str, action: str, subject: str, **details) -> int:
    head = conn.execute(store.locked(select(audit_head).where(audit_head.c.id == 1))).one()
    seq = head.seq + 1
    text = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
    digest = entry_hash(head.hash, seq, ts, actor, action, subject, text)
    conn.execute(
        audit.insert().values(
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            subject=subject,
            details=text,
            prev_hash=head.hash,
            hash=digest,
        )
    )
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return seq


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head: str
    problem: str = ""


def verify(conn: Connection) -> VerifyResult:
    prev = GENESIS
    count = 0
    expected_seq = 1
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        if row.seq != expected_seq:
            return VerifyResult(False, count, prev.hex(), f"entry {expected_seq} is missing (found {row.seq})")
        if row.prev_hash != prev:
            return VerifyResult(False, count, prev.hex(), f"entry {row.seq} does not link to its predecessor")
        digest = entry_hash(prev, row.seq, row.ts, row.actor, row.action, row.subject, row.details)
        if digest != row.hash:
            return VerifyResult(False, count, prev.hex(), f"entry {row.seq} was modified")
        prev = digest
        count += 1
        expected_seq += 1
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
    if head.seq != count or head.hash != prev:
        return VerifyResult(False, count, prev.hex(), "the chain head does not match the last entry (truncated?)")
    return VerifyResult(True, count, prev.hex())
