"""The coordinator service: meters, groups, membership, sessions, rekey policy, audit, events.

Every operation is one database transaction, and all session state lives in the store, so any
replica can serve any request and a killed process loses nothing: the next one (or another
replica) loads the session from its rows and carries on. The service never holds a group key:
it runs :class:`~gridkey.protocol.coordinator.CoordinatorSession`, which only relays and checks.

Rekey policy: a join, leave, revoke, manual request or elapsed rekey interval becomes a *pending
change*; a group with pending changes and no live session starts a new epoch. Joins wait up to
``join_window_ms`` so that a burst of joins shares one rekey; a leave or revoke cancels a live
session that still includes the removed meter and starts again without it at once. A session that
times out names the meters that did not answer; they are marked *lagging* and the epoch restarts
without them; a lagging meter comes back with a signed rejoin request.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..crypto.identity import load_certificate
from ..crypto.rng import system_rng
from ..crypto.signatures import VerifyKey, verify_key_from_cryptography
from ..crypto.suite import SUITES, get_suite
from ..protocol import groupdata
from ..protocol.coordinator import CoordinatorSession
from ..protocol.errors import AbortReason, DecodeError, DropReason, Rejected
from ..protocol.events import BROADCAST_KINDS, Aborted, Accepted, Broadcast, Committed, Dropped
from ..protocol.messages import ID_RE, MAX_GROUP_SIZE, MEMBER_MSG_MAX, Mode, decode
from ..protocol.policy import MEMBER_ROLES
from ..protocol.requests import MeterRequest, parse_request, verify_request
from ..protocol.roster import parse_statement
from ..store import Store
from ..store.schema import (
    epochs,
    events,
    group_data,
    groups,
    memberships,
    meters,
    pending_changes,
    session_broadcasts,
    session_messages,
    sessions,
)
from . import audit
from .config import GatewayConfig
from .errors import Conflict, Forbidden, GatewayError, Invalid, NotFound
from .faults import checkpoint
from .hub import EventHub, GatewayEvent
from .trust import Trust

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

LIVE = ("round1", "round2", "confirm")
REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
)
MAX_ATTEMPTS = 5
_FORBIDDEN_DROPS = {DropReason.NON_MEMBER, DropReason.BAD_SIGNATURE, DropReason.UNKNOWN_KEY}
_CONFLICT_DROPS = {DropReason.OTHER_SESSION, DropReason.UNEXPECTED, DropReason.EQUIVOCATION}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _transient(exc: BaseException) -> bool:
    """A deadlock or serialisation failure (PostgreSQL) or a busy database (SQLite): retry."""
    orig = getattr(exc, "orig", None)
    name = type(orig).__name__ if orig is not None else ""
    return isinstance(exc, DBAPIError) and (
        name in ("DeadlockDetected", "SerializationFailure", "LockNotAvailable") or "database is locked" in str(orig)
    )


def retrying(fn: F) -> F:
    """Run a write operation again when the database asks for it (lock order is fixed — group,
    then session, then audit head — so this is rare; it is the safety net the database expects)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(6):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                if not _transient(exc) or attempt == 5:
                    raise
                log.info("transient database error in %s, retrying: %s", fn.__name__, type(exc.orig).__name__)
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


def _clamp(limit: Any, top: int = 1000) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise Invalid("limit must be an integer")
    return max(1, min(limit, top))


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise Invalid(f"{what} must match {ID_RE.pattern}")
    return value


@dataclass(frozen=True)
class Outcome:
    """What became of a member message: accepted, or dropped as a harmless duplicate."""

    accepted: bool
    reason: str = ""
    state: str = ""


class _Tx:
    """One write transaction plus the events to publish once it has committed."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[GatewayEvent] = []


class Gateway:
    def __init__(
        self,
        store: Store,
        trust: Trust,
        config: GatewayConfig | None = None,
        *,
        clock: Callable[[], int] = wall_ms,
        rng=system_rng,
        hub: EventHub | None = None,
    ) -> None:
        self.store = store
        self.trust = trust
        self.config = config or GatewayConfig()
        self.clock = clock
        self.rng = rng
        self.hub = hub or EventHub()
        self._sessions: dict[bytes, tuple[int, CoordinatorSession]] = {}
        self._keys: dict[str, tuple[str, VerifyKey]] = {}  # meter id -> (fingerprint, key)
        self._lock = threading.Lock()
        self._ticks = 0
        self.counters: dict[str, int] = {}

    # --- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        try:
            with self.store.write() as conn:
                tx = _Tx(conn)
                yield tx
        except BaseException:
            # Sessions in memory may have advanced past what the store now holds: reload them.
            with self._lock:
                self._sessions.clear()
            raise
        for ev in tx.events:
            self.hub.publish(ev)

    def _emit(
        self,
        tx: _Tx,
        kind: str,
        *,
        group_id: str | None = None,
        meter_id: str | None = None,
        data: bytes | None = None,
        **body: Any,
    ) -> None:
        ts = self.clock()
        text = json.dumps(body, sort_keys=True, default=str)
        res = tx.conn.execute(
            insert(events).values(ts=ts, kind=kind, group_id=group_id, meter_id=meter_id, body=text, data=data)
        )
        tx.events.append(GatewayEvent(res.inserted_primary_key[0], ts, kind, group_id, meter_id, body, data))

    def _audit(self, tx: _Tx, actor: str, action: str, subject: str, **details: Any) -> None:
        audit.append(self.store, tx.conn, ts=self.clock(), actor=actor, action=action, subject=subject, **details)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def _meter_key(self, row, *, verify: bool = True) -> VerifyKey:
        """The meter's signing key. ``verify=False`` (resuming a session) trusts the certificate
        that was verified when the session started, so an expiry mid-session cannot wedge it."""
        with self._lock:
            cached = self._keys.get(row.meter_id)
        if cached and cached[0] == row.fingerprint and not verify:
            return cached[1]
        if verify:
            key = self.trust.verify(row.cert_pem.encode(), self.clock()).key
        else:
            key = verify_key_from_cryptography(load_certificate(row.cert_pem.encode()).public_key())
        with self._lock:
            self._keys[row.meter_id] = (row.fingerprint, key)
        return key

    def reconcile(self) -> int:
        """At start: make the CA's revocation list cover every meter revoked in the store.

        A crash between a revoke's database commit and its CA update leaves the CA behind; this
        repairs it. Returns how many revocations were (re)applied.
        """
        with self.store.read() as conn:
            rows = conn.execute(select(meters).where(meters.c.status == "revoked")).all()
        done = 0
        for r in rows:
            try:
                serial = int(r.serial, 16)
                if not self.trust.is_revoked(serial) and self.trust.revoke(
                    serial, r.revoked_at or self.clock(), r.revoke_reason or "unspecified"
                ):
                    done += 1
            except ValueError as exc:
                log.warning("could not re-apply revocation of %s: %s", r.meter_id, exc)
        return done

    # --- meters -----------------------------------------------------------------------------

    @retrying
    def enroll(self, cert_pem: bytes, *, actor: str) -> dict:
        """Register a meter (or controller) certificate issued by the CA. Idempotent."""
        now = self.clock()
        ident = self.trust.verify(cert_pem, now)
        if ident.role not in MEMBER_ROLES:
            raise Invalid(f"{ident.role} certificates cannot be enrolled as group members")
        pem = self._pem(cert_pem)
        with self._tx() as tx:
            row = tx.conn.execute(self.store.locked(select(meters).where(meters.c.meter_id == ident.member_id))).first()
            if row is not None:
                if row.status == "revoked":
                    raise Forbidden(f"meter {ident.member_id} is revoked")
                if row.fingerprint == ident.fingerprint:
                    return self._meter_dict(row)
                tx.conn.execute(
                    update(meters)
                    .where(meters.c.meter_id == ident.member_id)
                    .values(cert_pem=pem, kid=ident.kid, fingerprint=ident.fingerprint, serial=f"{ident.serial:x}")
                )
                self._audit(tx, actor, "meter.rotate", ident.member_id, fingerprint=ident.fingerprint)
            else:
                other = tx.conn.execute(select(meters.c.meter_id).where(meters.c.kid == ident.kid)).first()
                if other is not None:
                    raise Conflict(f"this key is already enrolled as {other.meter_id}")
                tx.conn.execute(
                    insert(meters).values(
                        meter_id=ident.member_id,
                        role=ident.role,
                        kid=ident.kid,
                        cert_pem=pem,
                        fingerprint=ident.fingerprint,
                        serial=f"{ident.serial:x}",
                        not_after=int(ident.not_after.timestamp() * 1000),
                        status="active",
                        enrolled_at=now,
                    )
                )
                self._audit(tx, actor, "meter.enroll", ident.member_id, role=ident.role, kid=ident.kid.hex())
            self._emit(tx, "meter.enrolled", meter_id=ident.member_id, role=ident.role, kid=ident.kid.hex())
            row = tx.conn.execute(select(meters).where(meters.c.meter_id == ident.member_id)).one()
            return self._meter_dict(row)

    def enroll_signed(self, request: bytes) -> dict:
        """Self-enrolment over CoAP: the request is signed by the key the certificate names."""
        s1, req = self._parse_request(request, "enroll")
        ident = self.trust.verify(req.cert_der or b"", self.clock())
        if ident.member_id != req.meter_id or not verify_request(s1, ident.key):
            raise Forbidden("enrolment request is not signed by the certificate's key")
        return self.enroll(req.cert_der or b"", actor=f"meter:{req.meter_id}")

    def _parse_request(self, request: bytes, kind: str):
        try:
            s1, req = parse_request(request)
        except DecodeError as exc:
            raise Invalid(f"malformed request: {exc}") from None
        if req.kind != kind:
            raise Invalid(f"expected a {kind} request")
        if abs(self.clock() - req.ts) > self.config.max_request_skew_ms:
            raise Forbidden("request timestamp outside the allowed clock skew")
        return s1, req

    @staticmethod
    def _pem(cert: bytes) -> str:
        from ..crypto.identity import cert_to_pem, load_certificate

        return cert_to_pem(load_certificate(cert)).decode()

    @staticmethod
    def _meter_dict(row) -> dict:
        return {
            "meter_id": row.meter_id,
            "role": row.role,
            "kid": row.kid.hex(),
            "fingerprint": row.fingerprint,
            "serial": row.serial,
            "not_after": row.not_after,
            "status": row.status,
            "enrolled_at": row.enrolled_at,
            "revoked_at": row.revoked_at,
            "revoke_reason": row.revoke_reason,
        }

    def list_meters(self, *, limit: int = 1000, after: str = "") -> list[dict]:
        limit = _clamp(limit)
        with self.store.read() as conn:
            rows = conn.execute(
                select(meters).where(meters.c.meter_id > after).order_by(meters.c.meter_id).limit(limit)
            ).all()
        return [self._meter_dict(r) for r in rows]

    def get_meter(self, meter_id: str) -> dict:
        _check_id(meter_id, "meter id")
        with self.store.read() as conn:
            row = conn.execute(select(meters).where(meters.c.meter_id == meter_id)).first()
            if row is None:
                raise NotFound(f"no meter {meter_id}")
            groups_of = conn.execute(
                select(memberships.c.group_id, memberships.c.status).where(
                    and_(memberships.c.meter_id == meter_id, memberships.c.status != "removed")
                )
            ).all()
        out = self._meter_dict(row)
        out["groups"] = [{"group_id": g.group_id, "status": g.status} for g in groups_of]
        return out

    def meter_cert(self, meter_id: str) -> str:
        _check_id(meter_id, "meter id")
        with self.store.read() as conn:
            row = conn.execute(select(meters.c.cert_pem).where(meters.c.meter_id == meter_id)).first()
        if row is None:
            raise NotFound(f"no meter {meter_id}")
        return row.cert_pem

    @retrying
    def revoke(self, meter_id: str, *, reason: str = "keyCompromise", actor: str) -> dict:
        """Revoke a meter: memberships, an immediate rekey of every group without it, its certificate.

        The database commit comes first and the CA's revocation list second (file I/O outside the
        write lock); revoking an already revoked meter repeats the CA step, so a failure between
        the two is repaired by retrying.
        """
        _check_id(meter_id, "meter id")
        if reason not in REVOCATION_REASONS:
            raise Invalid(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
        now = self.clock()
        with self._tx() as tx:
            row = tx.conn.execute(self.store.locked(select(meters).where(meters.c.meter_id == meter_id))).first()
            if row is None:
                raise NotFound(f"no meter {meter_id}")
            if row.status != "revoked":
                tx.conn.execute(
                    update(meters)
                    .where(meters.c.meter_id == meter_id)
                    .values(status="revoked", revoked_at=now, revoke_reason=reason)
                )
                affected = tx.conn.execute(
                    select(memberships.c.group_id)
                    .where(and_(memberships.c.meter_id == meter_id, memberships.c.status != "removed"))
                    .order_by(memberships.c.group_id)
                ).all()
                for g in affected:  # group rows before the audit head, in a fixed order
                    self._group_row(tx, g.group_id)
                tx.conn.execute(
                    update(memberships)
                    .where(memberships.c.meter_id == meter_id)
                    .values(status="removed", removed_at=now, refusal=None, refusal_epoch=None, refused_at=None)
                )
                self._audit(tx, actor, "meter.revoke", meter_id, reason=reason, groups=[g.group_id for g in affected])
                self._emit(tx, "meter.revoked", meter_id=meter_id, reason=reason)
                for g in affected:
                    # per group too, so whoever watches one group sees why its roster shrank
                    self._emit(tx, "member.removed", group_id=g.group_id, meter_id=meter_id, reason="revoke")
                    self._change(tx, g.group_id, "revoke", meter_id, now)
                    self._cancel_if_includes(tx, g.group_id, {meter_id}, now)
                    self._maybe_start(tx, g.group_id, now)
            row = tx.conn.execute(select(meters).where(meters.c.meter_id == meter_id)).one()
        try:
            self.trust.revoke(int(row.serial, 16), now, reason)
        except ValueError as exc:
            raise Invalid(f"meter revoked, but the CA refused to revoke its certificate: {exc}") from None
        return self._meter_dict(row)

    @retrying
    def request_rotation(self, meter_id: str, *, actor: str) -> dict:
        """Ask a meter to rotate its identity key (e.g. from the LwM2M Rotate executable).

        The gateway never holds a meter's private key, so it can only ask: the request is audited
        and announced as a ``meter.rotate_requested`` event; the meter re-enrols with a new
        certificate, which the gateway accepts as a rotation for the same meter id.
        """
        _check_id(meter_id, "meter id")
        with self._tx() as tx:
            row = tx.conn.execute(select(meters).where(meters.c.meter_id == meter_id)).first()
            if row is None:
                raise NotFound(f"no meter {meter_id}")
            if row.status != "active":
                raise Forbidden(f"meter {meter_id} is revoked")
            self._audit(tx, actor, "meter.rotate_requested", meter_id)
            self._emit(tx, "meter.rotate_requested", meter_id=meter_id)
        return self._meter_dict(row)

    # --- groups -----------------------------------------------------------------------------

    @retrying
    def create_group(
        self,
        group_id: str,
        *,
        members: list[str],
        suite: str | None = None,
        mode: int | str | None = None,
        rekey_interval_s: int = 0,
        actor: str,
    ) -> dict:
        _check_id(group_id, "group id")
        suite = suite or self.config.default_suite
        if suite not in SUITES:
            raise Invalid(f"suite must be one of {', '.join(SUITES)}")
        mode_value = self._mode(mode)
        if (
            not isinstance(rekey_interval_s, int)
            or isinstance(rekey_interval_s, bool)
            or not (0 <= rekey_interval_s <= 366 * 86400)
        ):
            raise Invalid("rekey_interval_s must be an integer between 0 (off) and 31622400")
        ids = self._member_list(members)
        now = self.clock()
        with self._tx() as tx:
            if tx.conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                raise Conflict(f"group {group_id} already exists")
            self._require_meters(tx.conn, ids, suite)
            tx.conn.execute(
                insert(groups).values(
                    group_id=group_id,
                    suite=suite,
                    mode=mode_value,
                    rekey_interval_s=rekey_interval_s,
                    created_at=now,
                    current_epoch=0,
                    last_rekey_at=now,
                )
            )
            for mid in ids:
                tx.conn.execute(
                    insert(memberships).values(group_id=group_id, meter_id=mid, status="active", added_at=now)
                )
            self._audit(tx, actor, "group.create", group_id, suite=suite, mode=mode_value, members=ids)
            self._emit(tx, "group.created", group_id=group_id, members=ids, suite=suite, mode=mode_value)
            self._change(tx, group_id, "create", None, now)
            self._maybe_start(tx, group_id, now, force=True)
        return self.get_group(group_id)

    def _mode(self, mode: int | str | None) -> int:
        if mode is None:
            return self.config.default_mode
        names = {"e2e": 0, "end-to-end": 0, "attested": 1, "gateway-attested": 1}
        if isinstance(mode, str) and mode in names:
            return names[mode]
        if mode in (0, 1) and not isinstance(mode, bool):
            return int(mode)
        raise Invalid("mode must be 'e2e' (0) or 'attested' (1)")

    def _member_list(self, members: Any) -> list[str]:
        if not isinstance(members, list) or len(members) > MAX_GROUP_SIZE:
            raise Invalid(f"members must be a list of at most {MAX_GROUP_SIZE} meter ids")
        ids = [_check_id(m, "meter id") for m in members]
        if len(set(ids)) != len(ids):
            raise Invalid("members must not repeat")
        return ids

    def _require_meters(self, conn: Connection, ids: list[str], suite: str) -> None:
        if not ids:
            return
        rows = {r.meter_id: r for r in conn.execute(select(meters).where(meters.c.meter_id.in_(ids)))}
        missing = [m for m in ids if m not in rows]
        if missing:
            raise NotFound(f"unknown meters: {', '.join(missing[:10])}")
        revoked = [m for m in ids if rows[m].status != "active"]
        if revoked:
            raise Forbidden(f"revoked meters cannot join: {', '.join(revoked[:10])}")
        want = get_suite(suite)
        for m in ids:
            if not want.accepts_key(self._meter_key(rows[m])):
                raise Invalid(f"meter {m}'s key does not match suite {suite}")

    def get_group(self, group_id: str) -> dict:
        _check_id(group_id, "group id")
        with self.store.read() as conn:
            g = conn.execute(select(groups).where(groups.c.group_id == group_id)).first()
            if g is None:
                raise NotFound(f"no group {group_id}")
            mem = conn.execute(
                select(
                    memberships.c.meter_id,
                    memberships.c.status,
                    memberships.c.refusal,
                    memberships.c.refusal_epoch,
                    memberships.c.refused_at,
                )
                .where(and_(memberships.c.group_id == group_id, memberships.c.status != "removed"))
                .order_by(memberships.c.meter_id)
            ).all()
            s = conn.execute(
                select(sessions)
                .where(sessions.c.group_id == group_id)
                .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
                .limit(1)
            ).first()
            last = conn.execute(
                select(epochs).where(epochs.c.group_id == group_id).order_by(epochs.c.epoch.desc()).limit(1)
            ).first()
        return {
            "group_id": g.group_id,
            "suite": g.suite,
            "mode": "attested" if g.mode == Mode.ATTESTED else "e2e",
            "rekey_interval_s": g.rekey_interval_s,
            "roster_version": parse_statement(g.roster_statement)[1].version if g.roster_statement else None,
            "epoch": g.current_epoch,
            "key_id": g.current_key_id.hex() if g.current_key_id else None,
            "members": [self._member_dict(m) for m in mem],
            "epoch_members": json.loads(last.members) if last else [],
            "last_rekey_at": g.last_rekey_at,
            "last_negotiation_ms": last.duration_ms if last else None,
            "session": self._session_dict(s) if s else None,
        }

    @staticmethod
    def _member_dict(m) -> dict:
        out = {"meter_id": m.meter_id, "status": m.status}
        if m.refusal is not None:  # what the member reported refusing, until it commits again
            out["refusal"] = {"detail": m.refusal, "epoch": m.refusal_epoch, "at": m.refused_at}
        return out

    @staticmethod
    def _session_dict(s) -> dict:
        return {
            "sid": s.sid.hex(),
            "epoch": s.epoch,
            "attempt": s.attempt,
            "state": s.state,
            "trigger": s.trigger,
            "members": json.loads(s.members),
            "started_at": s.started_at,
            "deadline": s.deadline,
            "ended_at": s.ended_at,
            "result": s.result,
            "excluded": json.loads(s.excluded) if s.excluded else [],
        }

    def list_groups(self) -> list[dict]:
        with self.store.read() as conn:
            ids = [r.group_id for r in conn.execute(select(groups.c.group_id).order_by(groups.c.group_id))]
        return [self.get_group(g) for g in ids]

    @retrying
    def set_rekey_interval(self, group_id: str, seconds: int, *, actor: str) -> dict:
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= 366 * 86400:
            raise Invalid("rekey interval must be an integer number of seconds (0 turns it off)")
        with self._tx() as tx:
            self._group_row(tx, group_id)
            tx.conn.execute(update(groups).where(groups.c.group_id == group_id).values(rekey_interval_s=seconds))
            self._audit(tx, actor, "group.rekey_interval", group_id, seconds=seconds)
            self._emit(tx, "group.updated", group_id=group_id, rekey_interval_s=seconds)
        return self.get_group(group_id)

    @retrying
    def set_roster_statement(self, group_id: str, data: bytes, *, actor: str) -> dict:
        """Strict roster profile: adopt an operator-signed roster statement as the group's membership.

        The gateway cannot verify the operator's signature (members do, with the key they were
        provisioned with); it checks the shape, the group, that the version is newer, and that each
        entry is an enrolled, active meter or controller under that exact key, then rekeys.
        """
        try:
            _, st = parse_statement(data)
        except DecodeError as exc:
            raise Invalid(f"roster statement: {exc}") from None
        if st.group_id != group_id:
            raise Invalid(f"the roster statement is for group {st.group_id}")
        now = self.clock()
        with self._tx() as tx:
            g = self._group_row(tx, group_id)
            if g.roster_statement:
                prev = parse_statement(g.roster_statement)[1].version
                if st.version <= prev:
                    raise Conflict(f"roster v{st.version} is not newer than v{prev}")
            ids = [e.member_id for e in st.members]
            self._require_meters(tx.conn, ids, g.suite)
            for e in st.members:
                row = tx.conn.execute(select(meters).where(meters.c.meter_id == e.member_id)).first()
                if row.kid != e.kid:
                    raise Invalid(f"{e.member_id} is enrolled under another key than the statement names")
            current = {
                r.meter_id: r.status
                for r in tx.conn.execute(select(memberships).where(memberships.c.group_id == group_id))
            }

            def set_status(mid: str, **values: Any) -> None:
                where = and_(memberships.c.group_id == group_id, memberships.c.meter_id == mid)
                tx.conn.execute(update(memberships).where(where).values(**values))

            for mid in ids:
                if mid not in current:
                    tx.conn.execute(
                        insert(memberships).values(group_id=group_id, meter_id=mid, status="active", added_at=now)
                    )
                elif current[mid] == "removed":
                    set_status(mid, status="active", removed_at=None)
            for mid, status in current.items():
                if mid not in ids and status != "removed":
                    set_status(mid, status="removed", removed_at=now, refusal=None, refusal_epoch=None, refused_at=None)
            tx.conn.execute(update(groups).where(groups.c.group_id == group_id).values(roster_statement=data))
            self._audit(tx, actor, "group.roster", group_id, version=st.version, members=ids)
            self._emit(tx, "group.updated", group_id=group_id, roster_version=st.version)
            self._change(tx, group_id, "roster", None, now)
            self._maybe_start(tx, group_id, now, force=True)
        return self.get_group(group_id)

    @retrying
    def add_members(self, group_id: str, meter_ids: list[str], *, actor: str) -> dict:
        ids = self._member_list(meter_ids)
        now = self.clock()
        with self._tx() as tx:
            g = self._group_row(tx, group_id)
            self._require_meters(tx.conn, ids, g.suite)
            current = {
                r.meter_id: r.status
                for r in tx.conn.execute(select(memberships).where(memberships.c.group_id == group_id))
            }
            active = sum(1 for s in current.values() if s != "removed")
            new = [m for m in ids if current.get(m, "removed") == "removed"]
            if active + len(new) > MAX_GROUP_SIZE:
                raise Conflict(f"a group holds at most {MAX_GROUP_SIZE} members")
            for mid in new:
                if mid in current:
                    tx.conn.execute(
                        update(memberships)
                        .where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == mid))
                        .values(status="active", added_at=now, removed_at=None)
                    )
                else:
                    tx.conn.execute(
                        insert(memberships).values(group_id=group_id, meter_id=mid, status="active", added_at=now)
                    )
                self._change(tx, group_id, "join", mid, now)
            if new:
                self._audit(tx, actor, "member.add", group_id, members=new)
                self._emit(tx, "member.added", group_id=group_id, members=new)
            self._maybe_start(tx, group_id, now)
        return self.get_group(group_id)

    @retrying
    def remove_member(self, group_id: str, meter_id: str, *, actor: str, reason: str = "leave") -> dict:
        _check_id(meter_id, "meter id")
        now = self.clock()
        with self._tx() as tx:
            self._group_row(tx, group_id)
            row = tx.conn.execute(
                select(memberships).where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == meter_id))
            ).first()
            if row is None or row.status == "removed":
                raise NotFound(f"{meter_id} is not a member of {group_id}")
            tx.conn.execute(
                update(memberships)
                .where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == meter_id))
                .values(status="removed", removed_at=now, refusal=None, refusal_epoch=None, refused_at=None)
            )
            self._audit(tx, actor, "member.remove", group_id, meter=meter_id, reason=reason)
            self._emit(tx, "member.removed", group_id=group_id, meter_id=meter_id, reason=reason)
            self._change(tx, group_id, "leave", meter_id, now)
            self._cancel_if_includes(tx, group_id, {meter_id}, now)
            self._maybe_start(tx, group_id, now)
        return self.get_group(group_id)

    @retrying
    def request_rekey(self, group_id: str, *, actor: str, trigger: str = "manual") -> dict:
        """The group after the request, with ``request_id`` and ``target_epoch``.

        The request is a pending change that the group's next negotiation takes up; a negotiation
        already under way keeps the roster and ephemerals it started with. ``session.started``
        lists the ``requests`` it takes up, so a caller that needs keys made after its request (a
        tamper alarm) waits for that session's epoch to be committed. ``target_epoch`` is the
        lowest epoch that can carry the request (a superseded session is replaced by one of the
        same number, so it is a bound, not a promise).
        """
        now = self.clock()
        with self._tx() as tx:
            g = self._group_row(tx, group_id)
            live = self._live_session(tx.conn, group_id)
            target = live.epoch if live is not None else g.current_epoch + 1
            rid = self._change(tx, group_id, trigger, None, now)
            self._audit(tx, actor, "group.rekey", group_id, trigger=trigger, request_id=rid)
            self._emit(tx, "rekey.requested", group_id=group_id, trigger=trigger, request_id=rid)
            self._maybe_start(tx, group_id, now, force=True)
        return {**self.get_group(group_id), "request_id": rid, "target_epoch": target}

    def _member_request(self, group_id: str, request: bytes, kind: str) -> MeterRequest:
        """A signed request from a current member of ``group_id``, checked before any write
        transaction: junk from the network must not get as far as one (a failed transaction makes
        the coordinator reload its sessions from the store)."""
        s1, req = self._parse_request(request, kind)
        if req.group_id != group_id:
            raise Invalid("request is for another group")
        with self.store.read() as conn:
            if conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first() is None:
                raise NotFound(f"no group {group_id}")
            m = conn.execute(select(meters).where(meters.c.meter_id == req.meter_id)).first()
            if m is None:
                raise NotFound(f"no meter {req.meter_id}")
            if m.status != "active":
                raise Forbidden(f"meter {req.meter_id} is revoked")
            if not verify_request(s1, self._meter_key(m)):
                raise Forbidden(f"{kind} request signature does not verify")
            self._membership(conn, group_id, req.meter_id)
        return req

    @staticmethod
    def _membership(conn: Connection, group_id: str, meter_id: str):
        ms = conn.execute(
            select(memberships).where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == meter_id))
        ).first()
        if ms is None or ms.status == "removed":
            raise Forbidden(f"{meter_id} is not a member of {group_id}")
        return ms

    @retrying
    def rejoin_signed(self, group_id: str, request: bytes) -> dict:
        """A lagging member (excluded after a timeout) asks to be taken back."""
        _check_id(group_id, "group id")
        now = self.clock()
        req = self._member_request(group_id, request, "rejoin")
        with self._tx() as tx:
            g = self._group_row(tx, group_id)
            ms = self._membership(tx.conn, group_id, req.meter_id)
            if ms.status == "lagging":
                tx.conn.execute(
                    update(memberships)
                    .where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == req.meter_id))
                    .values(status="active")
                )
                self._change(tx, group_id, "rejoin", req.meter_id, now)
                self._audit(tx, f"meter:{req.meter_id}", "member.rejoin", group_id)
                self._maybe_start(tx, group_id, now)
            elif not self._in_live_or_current(tx.conn, group_id, req.meter_id):
                # active but left out (e.g. it joined while a session was running): rekey with it
                self._change(tx, group_id, "rejoin", req.meter_id, now)
                self._maybe_start(tx, group_id, now)
            elif (
                req.epoch is not None and req.epoch < g.current_epoch and self._live_session(tx.conn, group_id) is None
            ):
                # in the current epoch's roster, and it says (signed) it holds an older key: it
                # restarted, or its Commit never arrived. Rekey, at most once per interval per group
                # -- kept in the group's row, so replicas sharing the store share the limit.
                last = g.keyless_rekey_at
                if last is not None and now - last < self.config.keyless_rekey_interval_ms:
                    return {"group_id": group_id, "meter_id": req.meter_id, "status": "active", "rekey": "later"}
                tx.conn.execute(update(groups).where(groups.c.group_id == group_id).values(keyless_rekey_at=now))
                self._change(tx, group_id, "keyless", req.meter_id, now)
                self._audit(tx, f"meter:{req.meter_id}", "member.keyless", group_id, epoch=req.epoch)
                self._maybe_start(tx, group_id, now)
        return {"group_id": group_id, "meter_id": req.meter_id, "status": "active"}

    @retrying
    def report_refusal(self, group_id: str, request: bytes) -> dict:
        """A member says (signed) why it refused a Start: kept for operators, never acted on.

        In end-to-end mode the member's own status is the word that counts (a gateway may drop
        this); here it reaches the audit log, the ``member.refused`` event and LwM2M Last Error, so
        a misconfigured group (e.g. attested for e2e-only meters) does not sit idle unexplained.
        """
        _check_id(group_id, "group id")
        now = self.clock()
        req = self._member_request(group_id, request, "refusal")
        with self.store.read() as conn:
            self._check_refused_epoch(conn, group_id, req.meter_id, req.epoch or 0)
        with self._tx() as tx:
            self._group_row(tx, group_id)  # locked: no commit can clear or outdate it meanwhile
            self._check_refused_epoch(tx.conn, group_id, req.meter_id, req.epoch or 0)
            ms = self._membership(tx.conn, group_id, req.meter_id)
            text = f"{req.reason}: {req.detail}" if req.detail else str(req.reason)
            if (ms.refusal, ms.refusal_epoch) != (text, req.epoch):  # a repeat is not news
                tx.conn.execute(
                    update(memberships)
                    .where(and_(memberships.c.group_id == group_id, memberships.c.meter_id == req.meter_id))
                    .values(refusal=text, refusal_epoch=req.epoch, refused_at=now)
                )
                self._audit(tx, f"meter:{req.meter_id}", "member.refused", group_id, epoch=req.epoch, reason=req.reason)
                self._emit(
                    tx,
                    "member.refused",
                    group_id=group_id,
                    meter_id=req.meter_id,
                    epoch=req.epoch,
                    reason=req.reason,
                    detail=req.detail or "",
                )
                self._count(f"refusal:{req.reason}")
        return {"group_id": group_id, "meter_id": req.meter_id, "epoch": req.epoch, "reason": req.reason}

    @staticmethod
    def _check_refused_epoch(conn: Connection, group_id: str, meter_id: str, epoch: int) -> None:
        """A refusal names a negotiation this gateway asked the member into, of an epoch the member
        has not committed since: a replayed or made-up report would otherwise undo the clearing."""
        asked = conn.execute(
            select(sessions.c.members).where(and_(sessions.c.group_id == group_id, sessions.c.epoch == epoch))
        ).all()
        if not any(meter_id in json.loads(r.members) for r in asked):
            raise Conflict(f"no negotiation of epoch {epoch} of {group_id} asked {meter_id} in")
        later = conn.execute(
            select(epochs.c.members).where(and_(epochs.c.group_id == group_id, epochs.c.epoch >= epoch))
        ).all()
        if any(meter_id in json.loads(r.members) for r in later):
            raise Conflict(f"{meter_id} has committed epoch {epoch} of {group_id} or a later one since")

    def _in_live_or_current(self, conn: Connection, group_id: str, meter_id: str) -> bool:
        s = conn.execute(
            select(sessions.c.members, sessions.c.state)
            .where(sessions.c.group_id == group_id)
            .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
            .limit(1)
        ).first()
        if s is not None and s.state in LIVE and meter_id in json.loads(s.members):
            return True
        e = conn.execute(
            select(epochs.c.members).where(epochs.c.group_id == group_id).order_by(epochs.c.epoch.desc()).limit(1)
        ).first()
        return e is not None and meter_id in json.loads(e.members)

    def list_epochs(self, group_id: str, *, limit: int = 100) -> list[dict]:
        _check_id(group_id, "group id")
        with self.store.read() as conn:
            if not conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                raise NotFound(f"no group {group_id}")
            rows = conn.execute(
                select(epochs).where(epochs.c.group_id == group_id).order_by(epochs.c.epoch.desc()).limit(limit)
            ).all()
        return [
            {
                "epoch": r.epoch,
                "key_id": r.key_id.hex(),
                "sid": r.sid.hex(),
                "members": json.loads(r.members),
                "trigger": r.trigger,
                "started_at": r.started_at,
                "committed_at": r.committed_at,
                "duration_ms": r.duration_ms,
            }
            for r in rows
        ]

    def group_certificates(self, group_id: str) -> list[dict]:
        """Certificates of everyone in the group's latest roster, so members can check each other."""
        _check_id(group_id, "group id")
        with self.store.read() as conn:
            if not conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                raise NotFound(f"no group {group_id}")
            s = conn.execute(
                select(sessions.c.members)
                .where(sessions.c.group_id == group_id)
                .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
                .limit(1)
            ).first()
            ids = set(json.loads(s.members)) if s else set()
            ids |= {
                r.meter_id
                for r in conn.execute(
                    select(memberships.c.meter_id).where(
                        and_(memberships.c.group_id == group_id, memberships.c.status != "removed")
                    )
                )
            }
            rows = conn.execute(select(meters).where(meters.c.meter_id.in_(sorted(ids)))).all()
        return [{"meter_id": r.meter_id, "role": r.role, "status": r.status, "cert_pem": r.cert_pem} for r in rows]

    def _group_row(self, tx: _Tx, group_id: str):
        _check_id(group_id, "group id")
        g = tx.conn.execute(self.store.locked(select(groups).where(groups.c.group_id == group_id))).first()
        if g is None:
            raise NotFound(f"no group {group_id}")
        return g

    # --- sessions ---------------------------------------------------------------------------

    def _change(self, tx: _Tx, group_id: str, kind: str, meter_id: str | None, now: int) -> int:
        """Queue a change for the group's next negotiation; returns its id (named by session.started)."""
        res = tx.conn.execute(
            insert(pending_changes).values(group_id=group_id, kind=kind, meter_id=meter_id, requested_at=now)
        )
        return res.inserted_primary_key[0]

    def _live_session(self, conn: Connection, group_id: str, lock: bool = False):
        stmt = (
            select(sessions)
            .where(and_(sessions.c.group_id == group_id, sessions.c.state.in_(LIVE)))
            .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
            .limit(1)
        )
        return conn.execute(self.store.locked(stmt) if lock else stmt).first()

    def _maybe_start(self, tx: _Tx, group_id: str, now: int, *, force: bool = False) -> None:
        g = tx.conn.execute(self.store.locked(select(groups).where(groups.c.group_id == group_id))).first()
        if g is None or self._live_session(tx.conn, group_id) is not None:
            return
        pend = tx.conn.execute(select(pending_changes).where(pending_changes.c.group_id == group_id)).all()
        if not pend:
            return
        kinds = sorted({p.kind for p in pend})
        joins_only = set(kinds) <= {"join", "rejoin", "keyless"}
        if joins_only and not force and now - min(p.requested_at for p in pend) < self.config.join_window_ms:
            return  # wait for more joins; tick() comes back
        tx.conn.execute(delete(pending_changes).where(pending_changes.c.group_id == group_id))
        requests = sorted(p.id for p in pend)
        self._start(tx, g, now, trigger=",".join(kinds), epoch=g.current_epoch + 1, requests=requests)

    def _start(self, tx: _Tx, g, now: int, *, trigger: str, epoch: int, requests: list[int] | None = None) -> bool:
        """Start a negotiation of ``epoch``; ``requests`` are the pending changes it takes up.

        ``session.started`` (or ``session.idle``, when it cannot start) names those requests, so a
        caller waiting on a rekey learns which epoch carries it, even when a superseded session is
        replaced by one of the same epoch number.
        """
        requests = list(requests or [])
        # Strict roster profile: every statement member whose meter is active, lagging or not (its
        # members accept a roster that leaves one out only after it timed out in this epoch).
        statuses = ("active", "lagging") if g.roster_statement else ("active",)
        rows = tx.conn.execute(
            select(meters)
            .join(memberships, memberships.c.meter_id == meters.c.meter_id)
            .where(
                and_(
                    memberships.c.group_id == g.group_id,
                    memberships.c.status.in_(statuses),
                    meters.c.status == "active",
                )
            )
            .order_by(meters.c.meter_id)
        ).all()
        members = []
        for r in rows:
            try:
                members.append((r.meter_id, self._meter_key(r)))
            except GatewayError as exc:  # e.g. expired or revoked at the CA: leave it out, say so
                self._emit(tx, "member.skipped", group_id=g.group_id, meter_id=r.meter_id, reason=exc.detail)
        if len(members) < 2:
            self._emit(
                tx, "session.idle", group_id=g.group_id, reason="fewer than two active members", requests=requests
            )
            return False
        attempt = tx.conn.execute(
            select(func.count())
            .select_from(sessions)
            .where(and_(sessions.c.group_id == g.group_id, sessions.c.epoch == epoch))
        ).scalar_one()
        suite = get_suite(g.suite)
        cs = CoordinatorSession(
            suite=suite,
            signing_key=self.trust.coordinator.signing_key,
            group_id=g.group_id,
            epoch=epoch,
            members=members,
            now=now,
            mode=Mode(g.mode),
            timeout_ms=self.config.session_timeout(attempt),
            attempt=attempt,
            rng=self.rng,
            roster_statement=g.roster_statement or b"",
        )
        ids = [m for m, _ in members]
        tx.conn.execute(
            insert(sessions).values(
                sid=cs.sid,
                group_id=g.group_id,
                epoch=epoch,
                attempt=attempt,
                state=cs.state.value,
                trigger=trigger[:64],
                start_msg=cs.start_message,
                members=json.dumps(ids),
                started_at=now,
                deadline=cs.deadline,
                version=0,
            )
        )
        tx.conn.execute(
            insert(session_broadcasts).values(sid=cs.sid, kind="start", data=cs.start_message, created_at=now)
        )
        with self._lock:
            self._sessions[cs.sid] = (0, cs)
        self._emit(
            tx,
            "session.started",
            group_id=g.group_id,
            data=cs.start_message,
            sid=cs.sid.hex(),
            epoch=epoch,
            attempt=attempt,
            trigger=trigger,
            members=ids,
            mode="attested" if g.mode else "e2e",
            requests=requests,
        )
        self._audit(tx, "gateway", "session.start", g.group_id, epoch=epoch, attempt=attempt, trigger=trigger)
        checkpoint("session-started")
        return True

    def _load(self, conn: Connection, row) -> CoordinatorSession:
        with self._lock:
            cached = self._sessions.get(row.sid)
        if cached and cached[0] == row.version:
            return cached[1]
        g = conn.execute(select(groups.c.suite).where(groups.c.group_id == row.group_id)).one()
        ids = json.loads(row.members)
        mrows = {r.meter_id: r for r in conn.execute(select(meters).where(meters.c.meter_id.in_(ids)))}
        msgs: dict[str, list[bytes]] = {"1": [], "2": [], "3": []}
        for m in conn.execute(
            select(session_messages)
            .where(session_messages.c.sid == row.sid)
            .order_by(session_messages.c.round, session_messages.c.idx)
        ):
            msgs[str(m.round)].append(m.data)
        casts = {
            b.kind: b.data for b in conn.execute(select(session_broadcasts).where(session_broadcasts.c.sid == row.sid))
        }
        record = {"start": row.start_msg, "state": row.state, "messages": msgs, "broadcasts": casts}
        cs = CoordinatorSession.from_record(
            record,
            suite=get_suite(g.suite),
            signing_key=self.trust.coordinator.signing_key,
            members=[(m, self._meter_key(mrows[m], verify=False)) for m in ids],
        )
        with self._lock:
            self._sessions[row.sid] = (row.version, cs)
        return cs

    def _apply(self, tx: _Tx, row, cs: CoordinatorSession, evs: list, now: int) -> list:
        """Persist what a session step produced; returns the Dropped events (if any)."""
        drops = []
        finished = None
        for ev in evs:
            if isinstance(ev, Accepted):
                tx.conn.execute(
                    insert(session_messages).values(
                        sid=row.sid, round=ev.round, idx=ev.idx, data=ev.data, received_at=now
                    )
                )
                checkpoint(f"accepted:{ev.round}")
            elif isinstance(ev, Broadcast):
                tx.conn.execute(
                    insert(session_broadcasts).values(sid=row.sid, kind=ev.kind, data=ev.data, created_at=now)
                )
                self._emit(
                    tx,
                    f"session.{ev.kind}",
                    group_id=row.group_id,
                    data=ev.data,
                    sid=row.sid.hex(),
                    epoch=row.epoch,
                )
                if ev.kind.startswith("bundle"):
                    checkpoint(f"round-complete:{ev.kind[-1]}")
            elif isinstance(ev, Committed):
                finished = ev
                self._commit(tx, row, ev, now)
            elif isinstance(ev, Aborted):
                finished = ev
            elif isinstance(ev, Dropped):
                drops.append(ev)
                self._count(f"drop:{ev.reason.value}")
        version = row.version + 1
        values: dict[str, Any] = {"state": cs.state.value, "version": version}
        if isinstance(finished, Aborted):
            values.update(
                ended_at=now,
                result=f"aborted:{finished.reason.value}",
                excluded=json.dumps(finished.excluded),
            )
        elif isinstance(finished, Committed):
            values.update(ended_at=now, result="committed")
        tx.conn.execute(update(sessions).where(sessions.c.sid == row.sid).values(**values))
        with self._lock:
            self._sessions[row.sid] = (version, cs)
        if isinstance(finished, Aborted):
            self._after_abort(tx, row, finished, now)
        elif isinstance(finished, Committed):
            with self._lock:
                self._sessions.pop(row.sid, None)
            self._maybe_start(tx, row.group_id, now)
        return drops

    def _commit(self, tx: _Tx, row, ev: Committed, now: int) -> None:
        try:
            with tx.conn.begin_nested():
                tx.conn.execute(
                    insert(epochs).values(
                        group_id=row.group_id,
                        epoch=ev.epoch,
                        key_id=ev.key_id,
                        sid=ev.sid,
                        members=json.dumps(list(ev.members)),
                        trigger=row.trigger,
                        started_at=row.started_at,
                        committed_at=now,
                        duration_ms=max(0, now - row.started_at),
                    )
                )
        except IntegrityError:
            # Another session already committed this epoch: never record a second key id for it.
            log.error("epoch %s of %s was already committed; refusing a second key id", ev.epoch, row.group_id)
            raise Conflict(f"epoch {ev.epoch} of {row.group_id} is already committed") from None
        tx.conn.execute(
            update(groups)
            .where(groups.c.group_id == row.group_id)
            .values(current_epoch=ev.epoch, current_key_id=ev.key_id, last_rekey_at=now)
        )
        tx.conn.execute(  # a member that took part in a committed epoch no longer refuses
            update(memberships)
            .where(
                and_(
                    memberships.c.group_id == row.group_id,
                    memberships.c.meter_id.in_(list(ev.members)),
                    memberships.c.refusal.is_not(None),
                )
            )
            .values(refusal=None, refusal_epoch=None, refused_at=None)
        )
        checkpoint("epoch-commit")
        self._audit(
            tx,
            "gateway",
            "epoch.commit",
            row.group_id,
            epoch=ev.epoch,
            key_id=ev.key_id.hex(),
            members=len(ev.members),
        )
        self._emit(
            tx,
            "epoch.committed",
            group_id=row.group_id,
            epoch=ev.epoch,
            key_id=ev.key_id.hex(),
            members=list(ev.members),
            duration_ms=max(0, now - row.started_at),
            trigger=row.trigger,
        )
        self._count("epochs_committed")

    def _after_abort(self, tx: _Tx, row, ev: Aborted, now: int) -> None:
        with self._lock:
            self._sessions.pop(row.sid, None)
        self._audit(
            tx,
            "gateway",
            "session.abort",
            row.group_id,
            epoch=row.epoch,
            reason=ev.reason.value,
            excluded=list(ev.excluded),
        )
        self._emit(
            tx,
            "session.aborted",
            group_id=row.group_id,
            sid=row.sid.hex(),
            epoch=row.epoch,
            reason=ev.reason.value,
            excluded=list(ev.excluded),
        )
        self._count(f"abort:{ev.reason.value}")
        for mid in ev.excluded:
            tx.conn.execute(
                update(memberships)
                .where(
                    and_(
                        memberships.c.group_id == row.group_id,
                        memberships.c.meter_id == mid,
                        memberships.c.status == "active",
                    )
                )
                .values(status="lagging")
            )
        if ev.reason in (AbortReason.CANCELLED, AbortReason.SUPERSEDED):
            return  # the caller starts the replacement
        g = tx.conn.execute(select(groups).where(groups.c.group_id == row.group_id)).one()
        if row.attempt + 1 >= MAX_ATTEMPTS and not ev.excluded:
            self._emit(tx, "session.failed", group_id=row.group_id, epoch=row.epoch, reason=ev.reason.value)
            return
        self._start(tx, g, now, trigger=f"restart:{ev.reason.value}", epoch=row.epoch)

    def _cancel_if_includes(self, tx: _Tx, group_id: str, removed: set[str], now: int) -> None:
        row = self._live_session(tx.conn, group_id, lock=True)
        if row is None or not removed & set(json.loads(row.members)):
            return
        cs = self._load(tx.conn, row)
        self._apply(tx, row, cs, cs.cancel(AbortReason.SUPERSEDED, "membership changed"), now)

    def handle_member_message(self, group_id: str, data: bytes) -> Outcome:
        """A Round1/Round2/Confirm from a meter (CoAP or HTTP). Raises a GatewayError if refused."""
        result = self.handle_member_messages(group_id, [data])[0]
        if isinstance(result, GatewayError):
            raise result
        return result

    @retrying
    def handle_member_messages(self, group_id: str, batch: list[bytes]) -> list[Outcome | GatewayError]:
        """Several member messages for one group in one transaction (see :class:`.batcher.Batcher`).

        Each message gets its own outcome; a refused one does not affect the others.
        """
        _check_id(group_id, "group id")
        results: list[Outcome | GatewayError | None] = [None] * len(batch)
        sids: list[bytes | None] = []
        for i, data in enumerate(batch):
            sids.append(None)
            if not isinstance(data, bytes) or len(data) > MEMBER_MSG_MAX:
                results[i] = Invalid(f"member messages are at most {MEMBER_MSG_MAX} bytes")
                continue
            try:
                sids[i] = decode(data, max_size=MEMBER_MSG_MAX).msg.sid
            except DecodeError as exc:
                self._count("drop:malformed")
                results[i] = Invalid(f"malformed message: {exc}")
        if any(s is not None for s in sids):
            now = self.clock()
            with self._tx() as tx:
                # Lock order everywhere: group row, then session row, then the audit head.
                # (SQLite holds one database-wide write lock already: nothing to lock row by row.)
                if self.store.is_postgres:
                    tx.conn.execute(self.store.locked(select(groups.c.group_id).where(groups.c.group_id == group_id)))
                found = self._live_session(tx.conn, group_id, lock=True)
                row = SimpleNamespace(**found._mapping) if found is not None else None
                accepted: list[dict] = []  # plain accepts not yet written (see _flush_accepted)
                for i, data in enumerate(batch):
                    if sids[i] is None:
                        continue
                    if row is None or row.sid != sids[i] or row.state not in LIVE:
                        self._count("drop:other_session")
                        results[i] = Conflict("no live session with this sid for the group (late or stale message)")
                        continue
                    cs = self._load(tx.conn, row)
                    evs = cs.receive(data, now)
                    if all(isinstance(ev, Accepted | Dropped) for ev in evs):
                        # The common case (a round message that does not complete its round) writes
                        # nothing that can fail: its rows are written together once per batch, without
                        # a savepoint each - 1 statement per batch instead of 4 per message.
                        results[i] = self._outcome(self._accept(row, cs, evs, now, accepted), cs.state.value)
                        continue
                    self._flush_accepted(tx, row, accepted)
                    mark = len(tx.events)
                    try:
                        with tx.conn.begin_nested():  # one refused message must not undo the others
                            drops = self._apply(tx, row, cs, evs, now)
                    except GatewayError as exc:
                        del tx.events[mark:]
                        with self._lock:
                            self._sessions.pop(row.sid, None)  # the in-memory session ran ahead: reload
                        results[i] = exc
                        found = tx.conn.execute(select(sessions).where(sessions.c.sid == row.sid)).one()
                        row = SimpleNamespace(**found._mapping)
                    else:
                        results[i] = self._outcome(drops, cs.state.value)
                        row.version, row.state = row.version + 1, cs.state.value  # as _apply stored them
                if row is not None:
                    self._flush_accepted(tx, row, accepted)
            if any(ev.kind == "epoch.committed" for ev in tx.events):
                checkpoint("epoch-committed")
        return results  # type: ignore[return-value]

    def _accept(self, row, cs: CoordinatorSession, evs: list, now: int, accepted: list[dict]) -> list[Dropped]:
        """What :meth:`_apply` does for a step that only accepted or dropped messages, with the rows
        queued in ``accepted`` for :meth:`_flush_accepted` (same transaction, so the same state at rest)."""
        drops = []
        for ev in evs:
            if isinstance(ev, Accepted):
                accepted.append({"sid": row.sid, "round": ev.round, "idx": ev.idx, "data": ev.data, "received_at": now})
                checkpoint(f"accepted:{ev.round}")
            else:
                drops.append(ev)
                self._count(f"drop:{ev.reason.value}")
        if any(isinstance(ev, Accepted) for ev in evs):
            row.version += 1
            row.state = cs.state.value
            row.dirty = True
            with self._lock:
                self._sessions[row.sid] = (row.version, cs)
        return drops

    @staticmethod
    def _flush_accepted(tx: _Tx, row, accepted: list[dict]) -> None:
        """Write the queued accepts: their messages and the session row's version and state."""
        if accepted:
            tx.conn.execute(insert(session_messages), accepted)
            accepted.clear()
        if getattr(row, "dirty", False):
            tx.conn.execute(
                update(sessions).where(sessions.c.sid == row.sid).values(state=row.state, version=row.version)
            )
            row.dirty = False

    @staticmethod
    def _outcome(drops: list[Dropped], state: str) -> Outcome | GatewayError:
        for d in drops:
            text = f"{d.reason.value}: {d.detail}" if d.detail else d.reason.value
            if d.reason == DropReason.DUPLICATE:
                return Outcome(False, "duplicate", state)
            if d.reason in _FORBIDDEN_DROPS:
                return Forbidden(text)
            if d.reason in _CONFLICT_DROPS:
                return Conflict(text)
            return Invalid(text)
        return Outcome(True, "", state)

    def session_messages(self, group_id: str) -> list[bytes]:
        """The coordinator messages of the group's latest session, in order (for catch-up)."""
        _check_id(group_id, "group id")
        order = {"start": 0, "bundle1": 1, "bundle2": 2, "commit": 3, "abort": 3}
        with self.store.read() as conn:
            s = conn.execute(
                select(sessions.c.sid)
                .where(sessions.c.group_id == group_id)
                .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
                .limit(1)
            ).first()
            if s is None:
                if not conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                    raise NotFound(f"no group {group_id}")
                return []
            rows = conn.execute(select(session_broadcasts).where(session_broadcasts.c.sid == s.sid)).all()
        return [r.data for r in sorted(rows, key=lambda r: order.get(r.kind, 9))]

    def tick(self) -> None:
        """Deadlines, batched joins, periodic rekeys. Every replica runs this every ~200 ms."""
        now = self.clock()
        with self.store.read() as conn:
            due = conn.execute(
                select(sessions.c.sid, sessions.c.group_id).where(
                    and_(sessions.c.state.in_(LIVE), sessions.c.deadline <= now)
                )
            ).all()
            pend = [r.group_id for r in conn.execute(select(pending_changes.c.group_id).distinct())]
            periodic = conn.execute(
                select(groups.c.group_id, groups.c.rekey_interval_s, groups.c.last_rekey_at).where(
                    groups.c.rekey_interval_s > 0
                )
            ).all()
        for sid, group_id in due:
            self._tick_deadline(sid, group_id, now)
        for p in periodic:
            if (p.last_rekey_at or 0) + p.rekey_interval_s * 1000 <= now and p.group_id not in pend:
                self._tick_periodic(p.group_id, now)
        for group_id in pend:
            self._tick_pending(group_id, now)
        self._ticks += 1
        if self._ticks % 25 == 0:  # other replicas' revocations reach this process's CA
            self.reconcile()

    @retrying
    def _tick_deadline(self, sid: bytes, group_id: str, now: int) -> None:
        with self._isolated("deadline", group_id), self._tx() as tx:
            self._group_row(tx, group_id)
            row = tx.conn.execute(self.store.locked(select(sessions).where(sessions.c.sid == sid))).first()
            if row is None or row.state not in LIVE:
                return
            cs = self._load(tx.conn, row)
            self._apply(tx, row, cs, cs.tick(now), now)

    @retrying
    def _tick_periodic(self, group_id: str, now: int) -> None:
        with self._isolated("periodic rekey", group_id), self._tx() as tx:
            g = self._group_row(tx, group_id)  # re-check under the lock: replicas tick too
            due = g.rekey_interval_s > 0 and (g.last_rekey_at or 0) + g.rekey_interval_s * 1000 <= now
            pending = tx.conn.execute(
                select(pending_changes.c.id).where(pending_changes.c.group_id == group_id).limit(1)
            ).first()
            if due and pending is None and self._live_session(tx.conn, group_id) is None:
                self._change(tx, group_id, "periodic", None, now)
                self._maybe_start(tx, group_id, now)

    @retrying
    def _tick_pending(self, group_id: str, now: int) -> None:
        with self._isolated("pending changes", group_id), self._tx() as tx:
            self._maybe_start(tx, group_id, now)

    @contextmanager
    def _isolated(self, what: str, group_id: str) -> Iterator[None]:
        """One group's trouble must not stop tick() from serving the others."""
        try:
            yield
        except GatewayError as exc:
            log.warning("%s for %s failed: %s", what, group_id, exc.detail)
            self._count(f"tick_error:{type(exc).__name__}")

    # --- group data -------------------------------------------------------------------------

    @retrying
    def post_data(self, group_id: str, data: bytes) -> dict:
        """Relay a group data message (a reading or a command). The gateway cannot read it."""
        _check_id(group_id, "group id")
        if not isinstance(data, bytes) or len(data) > groupdata.MAX_DATA_MSG:
            raise Invalid(f"group data messages are at most {groupdata.MAX_DATA_MSG} bytes")
        try:
            key_id, sender, seq, ctype, _ = groupdata.parse_data_message(data)
        except (Rejected, DecodeError) as exc:
            raise Invalid(f"not a group data message: {exc}") from None
        now = self.clock()
        with self._tx() as tx:
            g = self._group_row(tx, group_id)
            ep = tx.conn.execute(
                select(epochs).where(and_(epochs.c.group_id == group_id, epochs.c.key_id == key_id))
            ).first()
            if ep is None:
                raise Conflict("unknown key id for this group (not a committed epoch)")
            if ep.epoch < g.current_epoch - 1:
                raise Conflict("message is under an expired epoch key")
            roster = json.loads(ep.members)
            if sender >= len(roster):
                raise Invalid("sender index outside the epoch's roster")
            # The relay cannot authenticate the sender (only members can), but it can stop carrying
            # traffic claimed by a meter that has since been revoked or removed.
            who = tx.conn.execute(
                select(meters.c.status, memberships.c.status.label("membership"))
                .select_from(
                    meters.outerjoin(
                        memberships,
                        and_(memberships.c.meter_id == meters.c.meter_id, memberships.c.group_id == group_id),
                    )
                )
                .where(meters.c.meter_id == roster[sender])
            ).first()
            if who is None or who.status != "active" or who.membership in (None, "removed"):
                raise Forbidden(f"{roster[sender]} is no longer a member of {group_id}")
            digest = hashlib.sha256(data).digest()
            exists = tx.conn.execute(
                select(group_data.c.id).where(and_(group_data.c.group_id == group_id, group_data.c.digest == digest))
            ).first()
            if exists:
                return {"id": exists.id, "duplicate": True}
            res = tx.conn.execute(
                insert(group_data).values(
                    group_id=group_id,
                    key_id=key_id,
                    sender=roster[sender],
                    content_type=ctype,
                    digest=digest,
                    data=data,
                    received_at=now,
                )
            )
            msg_id = res.inserted_primary_key[0]
            kind = "command" if ctype == groupdata.ContentType.COMMAND else "reading"
            self._emit(
                tx,
                f"data.{kind}",
                group_id=group_id,
                data=data,
                msg_id=msg_id,
                sender=roster[sender],
                seq=seq,
                epoch=ep.epoch,
                key_id=key_id.hex(),
                size=len(data),
            )
            # No audit entry here: the relay cannot authenticate group data (only members hold the
            # key), so anyone could fill the tamper-evident log with claims. Operator commands are
            # audited where they are authenticated: `record_command`, called by the REST API.
        return {"id": msg_id, "duplicate": False}

    @retrying
    def record_command(self, group_id: str, *, actor: str, epoch: int | None, msg_id: int | None, size: int) -> None:
        """Audit an operator's group command (the controller has sealed and posted it)."""
        with self._tx() as tx:
            self._group_row(tx, group_id)
            self._audit(tx, actor, "command.send", group_id, epoch=epoch, msg_id=msg_id, size=size)

    def data_since(self, group_id: str, after: int = 0, limit: int = 200) -> list[dict]:
        _check_id(group_id, "group id")
        after, limit = max(0, int(after)), _clamp(limit)
        with self.store.read() as conn:
            if not conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                raise NotFound(f"no group {group_id}")
            rows = conn.execute(
                select(group_data)
                .where(and_(group_data.c.group_id == group_id, group_data.c.id > after))
                .order_by(group_data.c.id)
                .limit(limit)
            ).all()
        return [
            {
                "id": r.id,
                "sender": r.sender,
                "key_id": r.key_id.hex(),
                "content_type": r.content_type,
                "data": r.data,
                "received_at": r.received_at,
            }
            for r in rows
        ]

    def readings(self, group_id: str, *, after: int = 0, limit: int = 200, reading_id: int | None = None) -> list[dict]:
        """Public metadata of relayed readings (never their plaintext: the gateway cannot read them).

        ``digest`` (hex SHA-256 of the message) lets a key holder that hosts a member match what
        it decrypted; epoch and sequence number are what the message itself says.
        """
        _check_id(group_id, "group id")
        after, limit = max(0, int(after)), _clamp(limit)
        cond = [group_data.c.group_id == group_id, group_data.c.content_type == int(groupdata.ContentType.READING)]
        cond.append(group_data.c.id == reading_id if reading_id is not None else group_data.c.id > after)
        with self.store.read() as conn:
            if not conn.execute(select(groups.c.group_id).where(groups.c.group_id == group_id)).first():
                raise NotFound(f"no group {group_id}")
            rows = conn.execute(
                select(group_data, epochs.c.epoch)
                .select_from(
                    group_data.outerjoin(
                        epochs, and_(epochs.c.group_id == group_data.c.group_id, epochs.c.key_id == group_data.c.key_id)
                    )
                )
                .where(and_(*cond))
                .order_by(group_data.c.id)
                .limit(limit)
            ).all()
        out = []
        for r in rows:
            _, _, seq, _, _ = groupdata.parse_data_message(r.data)  # checked when it was relayed
            out.append(
                {
                    "id": r.id,
                    "group_id": group_id,
                    "sender": r.sender,
                    "epoch": r.epoch,
                    "key_id": r.key_id.hex(),
                    "seq": seq,
                    "size": len(r.data),
                    "digest": r.digest.hex(),
                    "received_at": r.received_at,
                }
            )
        return out

    def reading(self, group_id: str, reading_id: int) -> dict:
        """One relayed reading's metadata (see :meth:`readings`); 404 when the group has no such reading."""
        found = self.readings(group_id, reading_id=reading_id, limit=1)
        if not found:
            raise NotFound(f"no reading {reading_id} in group {group_id}")
        return found[0]

    # --- what a meter receives ----------------------------------------------------------------

    INLINE_LIMIT = 990  # keeps a notification within one 1024-byte CoAP payload; larger ones are fetched

    def inbox(self, group_id: str, meter_id: str, *, after: int = 0, limit: int = 100) -> tuple[int, list[list]]:
        """Coordinator messages and group data for one member, after event id ``after``.

        Returns (cursor, items); items are ``["s", sid, kind, message]`` for coordinator messages
        and ``["d", id, message]`` for group data. A message too large to inline is ``None``
        (fetch it with :meth:`session_message` or :meth:`data_since`). Refused for revoked,
        removed and unknown meters: that is what stops a revoked meter from receiving anything.
        """
        _check_id(group_id, "group id")
        _check_id(meter_id, "meter id")
        status = self.member_status(group_id, meter_id)
        if status not in ("active", "lagging"):
            raise Forbidden(f"{meter_id} may not read {group_id} ({status})")
        with self.store.read() as conn:
            rows = conn.execute(
                select(events)
                .where(and_(events.c.group_id == group_id, events.c.id > after, events.c.data.is_not(None)))
                .order_by(events.c.id)
                .limit(limit)
            ).all()
            cursor = after
            if not rows:
                top = conn.execute(select(func.max(events.c.id))).scalar()
                cursor = max(after, top or 0)
        items = []
        for r in rows:
            cursor = r.id
            item = self.inbox_item(r.kind, json.loads(r.body), r.data)
            if item is not None:
                items.append(item)
        return cursor, items

    def inbox_item(self, kind: str, body: dict, data: bytes | None) -> list | None:
        inline = data if data is not None and len(data) <= self.INLINE_LIMIT else None
        if kind.startswith("session."):
            sub = kind.split(".", 1)[1]
            return ["s", bytes.fromhex(body["sid"]), "start" if sub == "started" else sub, inline]
        if kind.startswith("data."):
            return ["d", body["msg_id"], inline]
        return None

    def session_message(self, group_id: str, kind: str) -> bytes:
        """One coordinator message (start, bundle1, bundle2, commit, abort) of the latest session."""
        if kind not in BROADCAST_KINDS:
            raise Invalid("kind must be start, bundle1, bundle2, commit or abort")
        _check_id(group_id, "group id")
        with self.store.read() as conn:
            s = conn.execute(
                select(sessions.c.sid)
                .where(sessions.c.group_id == group_id)
                .order_by(sessions.c.epoch.desc(), sessions.c.attempt.desc())
                .limit(1)
            ).first()
            row = None
            if s is not None:
                row = conn.execute(
                    select(session_broadcasts.c.data).where(
                        and_(session_broadcasts.c.sid == s.sid, session_broadcasts.c.kind == kind)
                    )
                ).first()
        if row is None:
            raise NotFound(f"no {kind} message in {group_id}'s latest session")
        return row.data

    # --- membership checks for transports ---------------------------------------------------

    def member_status(self, group_id: str, meter_id: str) -> str:
        """'active', 'lagging', 'removed', 'revoked' or 'unknown': who may observe a group."""
        with self.store.read() as conn:
            m = conn.execute(select(meters.c.status).where(meters.c.meter_id == meter_id)).first()
            if m is None:
                return "unknown"
            if m.status == "revoked":
                return "revoked"
            ms = conn.execute(
                select(memberships.c.status).where(
                    and_(memberships.c.group_id == group_id, memberships.c.meter_id == meter_id)
                )
            ).first()
        return ms.status if ms else "removed"

    # --- audit and events -------------------------------------------------------------------

    def audit_entries(self, *, after: int = 0, limit: int = 200) -> list[dict]:
        after, limit = max(0, int(after)), _clamp(limit)
        from ..store.schema import audit as audit_table

        with self.store.read() as conn:
            rows = conn.execute(
                select(audit_table).where(audit_table.c.seq > after).order_by(audit_table.c.seq).limit(limit)
            ).all()
        return [
            {
                "seq": r.seq,
                "ts": r.ts,
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "details": json.loads(r.details),
                "hash": r.hash.hex(),
            }
            for r in rows
        ]

    def verify_audit(self) -> audit.VerifyResult:
        with self.store.read() as conn:
            return audit.verify(conn)

    def events_since(self, after: int = 0, limit: int = 500, group_id: str | None = None) -> list[GatewayEvent]:
        after, limit = max(0, int(after)), _clamp(limit)
        from .hub import row_to_event

        stmt = select(events).where(events.c.id > after)
        if group_id:
            stmt = stmt.where(events.c.group_id == group_id)
        with self.store.read() as conn:
            rows = conn.execute(stmt.order_by(events.c.id).limit(limit)).all()
        return [row_to_event(r) for r in rows]

    def crl(self):
        """The local CA's CRL, including revocations other replicas made (read from the store)."""
        self.reconcile()
        return self.trust.crl(self.clock())

    def latest_event_id(self) -> int:
        """Where a freshly started replica's event poller begins (old events are not re-sent)."""
        with self.store.read() as conn:
            return conn.execute(select(func.max(events.c.id))).scalar() or 0

    @retrying
    def prune(self) -> None:
        """Keep the event feed and the relayed data bounded."""
        with self._tx() as tx:
            top = tx.conn.execute(select(func.max(events.c.id))).scalar()
            if top and top > self.config.event_retention:
                tx.conn.execute(delete(events).where(events.c.id <= top - self.config.event_retention))
            top = tx.conn.execute(select(func.max(group_data.c.id))).scalar()
            if top and top > self.config.data_retention * 4:
                tx.conn.execute(delete(group_data).where(group_data.c.id <= top - self.config.data_retention * 4))

    def stats(self) -> dict[str, Any]:
        with self.store.read() as conn:
            out = {
                "meters": conn.execute(select(func.count()).select_from(meters)).scalar_one(),
                "groups": conn.execute(select(func.count()).select_from(groups)).scalar_one(),
                "live_sessions": conn.execute(
                    select(func.count()).select_from(sessions).where(sessions.c.state.in_(LIVE))
                ).scalar_one(),
                "epochs": conn.execute(select(func.count()).select_from(epochs)).scalar_one(),
            }
        with self._lock:
            out["counters"] = dict(self.counters)
        return out
