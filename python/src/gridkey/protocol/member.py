"""The member's side: one negotiation (:class:`MemberSession`) and a group's lifetime (:class:`GroupMember`).

    state          accepts (coordinator-signed)   action                                  then
    ------------   ----------------------------   -------------------------------------   -------------
    await_bundle1  Bundle(1)                      check own z, verify neighbours' z,      await_bundle2
                                                  send Round2 = sign(X_i; aad = H1)
                                                  (Round1 = sign(z_i; aad = session hash))
    await_bundle2  Bundle(2)                      verify peers' Round2 over *our* H1,     await_commit
                                                  K, key schedule, erase r_i,
                                                  send Confirm = sign(key id, tag; aad = TH)
    await_commit   Commit (however late)          key id and tag equal ours               committed
    any live       Abort                          erase secrets                           aborted
    await_bundle*  tick(now > deadline + grace)   erase secrets                           aborted

A Start is accepted only within the member's own :class:`~.policy.MemberPolicy` (its modes; in
end-to-end mode a usable CRL and a roster of non-revoked meters and controllers the directory
binds); anything else is :class:`~.events.Refused` with the reason.

Signature economy (end-to-end mode): a member verifies its two ring neighbours' Round1 signatures
(the only z values it multiplies by r_i) and every peer's Round2 signature. Because each Round2
signature covers H1, the hash of *all* z values, and each honest member checks that its own z sits
in the bundle unchanged, a valid Round2 signature from member j is j's endorsement of the entire
round-1 transcript, including z_j. So n+1 verifications authenticate all 2n values; see
docs/protocol.md §6 for the argument. Messages arriving early are held and processed in order.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ..crypto.groups import Element, InvalidElement, Rng
from ..crypto.rng import system_rng
from ..crypto.signatures import SigningKey, VerifyKey
from ..crypto.suite import Suite
from . import bd, cbor
from .cbor import encode_bstr
from .cose import Sign1, parse_sign1
from .directory import KeyDirectory
from .errors import AbortReason, DecodeError, DropReason
from .events import Aborted, Dropped, Event, KeyEstablished, KeysNeeded, Refused, Send
from .keyschedule import EpochKeys, derive, round1_hash, session_hash, sid_of, transcript_hash
from .messages import (
    MEMBER_MSG_MAX,
    MEMBER_TYPES,
    Abort,
    Bundle,
    Commit,
    Confirm,
    Envelope,
    Mode,
    MsgType,
    Round1,
    Round2,
    Start,
    decode,
    member_payload_prefix,
)
from .policy import MEMBER_ROLES, MemberPolicy
from .roster import verify_statement

DEFAULT_MAX_SKEW_MS = 300_000
DEFAULT_GRACE_MS = 2_000
DEFAULT_POLICY = MemberPolicy()


@dataclass(frozen=True)
class MemberIdentity:
    member_id: str
    signing_key: SigningKey

    @property
    def kid(self) -> bytes:
        return self.signing_key.kid


class MemberState(StrEnum):
    AWAIT_BUNDLE1 = "await_bundle1"
    AWAIT_BUNDLE2 = "await_bundle2"
    AWAIT_COMMIT = "await_commit"
    COMMITTED = "committed"
    ABORTED = "aborted"


_EXPECTS = {MemberState.AWAIT_BUNDLE1: "bundle1", MemberState.AWAIT_BUNDLE2: "bundle2"}
_ORDER = ("bundle1", "bundle2", "commit")


class _Abort(Exception):
    def __init__(self, reason: AbortReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class MemberSession:
    """One member in one negotiation. Created from a verified, accepted Start."""

    def __init__(
        self,
        *,
        suite: Suite,
        me: MemberIdentity,
        start: Start,
        directory: KeyDirectory,
        rng: Rng = system_rng,
        grace_ms: int = DEFAULT_GRACE_MS,
        sh: bytes | None = None,
    ) -> None:
        idx = start.index_of(me.member_id)
        if idx is None or start.roster[idx].kid != me.kid:
            raise ValueError("this member is not in the Start roster")
        self.suite = suite
        self.me = me
        self.start = start
        self.session_hash = sh or _session_hash_of(suite, start)  # what Round1, H1 and TH bind
        self.idx = idx
        self._directory = directory
        self._grace_ms = grace_ms
        group = suite.group
        self._r: int | None = group.random_scalar(rng)
        self._z = group.encode(group.base_mult(self._r))
        self._x = b""
        self._z_prev: Element | None = None
        self._zs: list[bytes] = []
        self._h1 = b""
        self._keys: EpochKeys | None = None
        self._tag = b""
        x_len = len(group.identity_encoding) if start.n == 2 else group.element_len
        self._element_len = {MsgType.ROUND1: group.element_len, MsgType.ROUND2: x_len}
        self._element_head = {t: encode_bstr(bytes(v))[:-v] for t, v in self._element_len.items()}
        # {1: type, 2: sid, 3: epoch, 4: …}: everything before member j's index, built once
        self._prefix_head = {t: member_payload_prefix(t, start.sid, start.epoch, 0)[:-2] for t in self._element_len}
        self.state = MemberState.AWAIT_BUNDLE1
        self.last_sent = Round1(start.sid, start.epoch, idx, self._z).sign(me.signing_key, self.session_hash)
        self._seen: dict[str, bytes] = {}  # kind -> payload already processed
        self._pending: dict[str, Envelope] = {}  # early arrivals
        self.result: KeyEstablished | Aborted | None = None

    @property
    def sid(self) -> bytes:
        return self.start.sid

    @property
    def n(self) -> int:
        return self.start.n

    @property
    def is_terminal(self) -> bool:
        return self.state in (MemberState.COMMITTED, MemberState.ABORTED)

    def get_timer(self) -> int | None:
        if self.is_terminal or self.state == MemberState.AWAIT_COMMIT:
            return None
        return self.start.deadline + self._grace_ms

    def first_message(self) -> Send:
        return Send(self.last_sent, 1)

    # --- input ------------------------------------------------------------------------------

    def handle(self, env: Envelope) -> list[Event]:
        """A coordinator message for this session whose signature the caller has verified."""
        msg = env.msg
        if isinstance(msg, Abort):
            if self.is_terminal:
                return [Dropped(DropReason.UNEXPECTED, "abort after the session ended")]
            return self._abort(AbortReason.COORDINATOR_ABORT, msg.reason, msg.excluded)
        if isinstance(msg, Bundle):
            kind = f"bundle{msg.round}"
        elif isinstance(msg, Commit):
            kind = "commit"
        else:
            return [Dropped(DropReason.UNEXPECTED, f"{msg.TYPE.name} within a session")]
        if kind in self._seen:
            same = self._seen[kind] == env.cose.payload
            return [Dropped(DropReason.DUPLICATE if same else DropReason.EQUIVOCATION, kind)]
        if self.is_terminal:
            return [Dropped(DropReason.UNEXPECTED, f"{kind} after the session ended")]
        expected = _EXPECTS.get(self.state, "commit")
        if kind != expected:
            if _ORDER.index(kind) > _ORDER.index(expected):
                self._pending[kind] = env  # reordered by the network; process when its turn comes
                return []
            return [Dropped(DropReason.UNEXPECTED, kind)]
        events = self._step(kind, env)
        while not self.is_terminal and (nxt := _EXPECTS.get(self.state, "commit")) in self._pending:
            events += self._step(nxt, self._pending.pop(nxt))
        return events

    def tick(self, now: int) -> list[Event]:
        # Once confirmed, a member keeps its derived key until this session's Commit or Abort (or a
        # newer Start): a Commit delayed past the deadline by a lossy link still completes it, where
        # aborting left the member keyless until something else triggered a rekey.
        if self.is_terminal or self.state == MemberState.AWAIT_COMMIT or now <= self.start.deadline + self._grace_ms:
            return []
        return self._abort(AbortReason.TIMEOUT, "no commit before the deadline")

    # --- steps ------------------------------------------------------------------------------

    def _step(self, kind: str, env: Envelope) -> list[Event]:
        self._seen[kind] = env.cose.payload
        try:
            if kind == "bundle1":
                return self._on_bundle1(env.msg)  # type: ignore[arg-type]
            if kind == "bundle2":
                return self._on_bundle2(env.msg)  # type: ignore[arg-type]
            return self._on_commit(env.msg)  # type: ignore[arg-type]
        except _Abort as exc:
            return self._abort(exc.reason, exc.detail)

    def _inner(self, bundle: Bundle, j: int, mtype: MsgType) -> tuple[Sign1, bytes]:
        """Member j's signed Round1/Round2 from an end-to-end bundle: its COSE layer and element.

        A valid item has exactly one payload encoding, the deterministic CBOR of
        ``{1: type, 2: sid, 3: epoch, 4: j, 5: element}``, so it is compared with that encoding
        instead of being decoded generically: equivalent (anything else is rejected), and several
        times cheaper on the path a member runs 2n times per negotiation.
        """
        try:
            s1 = parse_sign1(bundle.items[j], max_size=MEMBER_MSG_MAX)
        except DecodeError as exc:
            raise _Abort(AbortReason.INVALID_BUNDLE, f"item {j}: {exc}") from None
        prefix = self._prefix_head[mtype] + cbor.encode_uint(j) + b"\x05" + self._element_head[mtype]
        payload = s1.payload
        size = len(payload) - len(prefix)
        if s1.kid != self.start.roster[j].kid or size != self._element_len[mtype] or not payload.startswith(prefix):
            raise _Abort(AbortReason.INVALID_BUNDLE, f"item {j} is not member {j}'s {mtype.name.title()}")
        return s1, payload[len(prefix) :]

    def _peer_key(self, j: int) -> VerifyKey:
        key = self._directory.lookup(self.start.roster[j])
        if key is None:  # checked when the Start was accepted; the directory changed since
            raise _Abort(AbortReason.BAD_PEER_SIGNATURE, f"no key for member {j}")
        return key

    def _decode_element(self, data: bytes, what: str) -> Element:
        try:
            return self.suite.group.decode(data)
        except InvalidElement as exc:
            raise _Abort(AbortReason.INVALID_BUNDLE, f"{what}: {exc}") from None

    def _check_bundle(self, bundle: Bundle, rnd: int) -> None:
        if bundle.round != rnd or len(bundle.items) != self.n:
            raise _Abort(AbortReason.INVALID_BUNDLE, f"round-{rnd} bundle must hold {self.n} items")

    def _on_bundle1(self, bundle: Bundle) -> list[Event]:
        self._check_bundle(bundle, 1)
        n, i = self.n, self.idx
        prev, nxt = (i - 1) % n, (i + 1) % n
        e2e = self.start.mode == Mode.E2E
        zs: list[bytes] = []
        for j in range(n):
            if e2e:
                s1, z = self._inner(bundle, j, MsgType.ROUND1)
                if j in (prev, nxt) and j != i and not s1.verify(self._peer_key(j), self.session_hash):
                    raise _Abort(AbortReason.BAD_PEER_SIGNATURE, f"round-1 signature of member {j}")
                zs.append(z)
            else:
                zs.append(bundle.items[j])
        if zs[i] != self._z:
            raise _Abort(AbortReason.TRANSCRIPT_MISMATCH, "our own z was altered")
        group = self.suite.group
        z_prev = self._decode_element(zs[prev], "z_{i-1}")
        z_next = z_prev if nxt == prev else self._decode_element(zs[nxt], "z_{i+1}")
        try:
            x = bd.compute_x(group, self._r, z_prev, z_next, n)  # type: ignore[arg-type]
        except InvalidElement as exc:
            raise _Abort(AbortReason.DEGENERATE, str(exc)) from None
        self._x = group.identity_encoding if x is None else group.encode(x)
        self._zs = zs
        self._z_prev = z_prev
        self._h1 = round1_hash(self.suite, self.session_hash, zs)
        self.last_sent = Round2(self.sid, self.start.epoch, i, self._x).sign(self.me.signing_key, self._h1)
        self.state = MemberState.AWAIT_BUNDLE2
        return [Send(self.last_sent, 2)]

    def _on_bundle2(self, bundle: Bundle) -> list[Event]:
        self._check_bundle(bundle, 2)
        n, i = self.n, self.idx
        group = self.suite.group
        e2e = self.start.mode == Mode.E2E
        raw_xs: list[bytes] = []
        for j in range(n):
            if e2e:
                s1, x = self._inner(bundle, j, MsgType.ROUND2)
                if j != i and not s1.verify(self._peer_key(j), self._h1):
                    raise _Abort(
                        AbortReason.TRANSCRIPT_MISMATCH,
                        f"member {j}'s round-2 signature does not cover our round-1 transcript",
                    )
                raw_xs.append(x)
            else:
                raw_xs.append(bundle.items[j])
        if raw_xs[i] != self._x:
            raise _Abort(AbortReason.TRANSCRIPT_MISMATCH, "our own X was altered")
        if n == 2:
            if raw_xs[(i + 1) % n] != group.identity_encoding:
                raise _Abort(AbortReason.INVALID_BUNDLE, "X must be the identity for n = 2")
            xs: list[Element | None] = [None, None]
        else:
            xs = [self._decode_element(x, f"X_{j}") for j, x in enumerate(raw_xs)]
        try:
            k = bd.compute_key(group, self._r, i, self._z_prev, xs)  # type: ignore[arg-type]
        except InvalidElement as exc:
            raise _Abort(AbortReason.DEGENERATE, str(exc)) from None
        th = transcript_hash(self.suite, self.session_hash, self._zs, raw_xs)
        derived = derive(
            self.suite,
            group.encode(k),
            th,
            group_id=self.start.group_id,
            epoch=self.start.epoch,
            sid=self.sid,
            roster=self.start.roster,
        )
        del k
        self._erase_ephemeral()
        self._keys, self._tag = derived.keys, derived.tag
        confirm = Confirm(self.sid, self.start.epoch, i, derived.keys.key_id, derived.tag)
        self.last_sent = confirm.sign(self.me.signing_key, th)
        self.state = MemberState.AWAIT_COMMIT
        return [Send(self.last_sent, 3)]

    def _on_commit(self, commit: Commit) -> list[Event]:
        assert self._keys is not None
        if not (hmac.compare_digest(commit.tag, self._tag) and commit.key_id == self._keys.key_id):
            raise _Abort(AbortReason.CONFIRM_MISMATCH, "commit does not match our key confirmation")
        self.state = MemberState.COMMITTED
        self.result = KeyEstablished(self._keys)
        return [self.result]

    def _erase_ephemeral(self) -> None:
        # Python cannot overwrite an int in place; dropping the only references is the best we can
        # do, and the scalar never leaves this object. See docs/protocol.md §7 (erasure).
        self._r = None
        self._z_prev = None

    def _abort(self, reason: AbortReason, detail: str, excluded: tuple[str, ...] = ()) -> list[Event]:
        self._erase_ephemeral()
        self._keys = None
        self.state = MemberState.ABORTED
        self.result = Aborted(reason, self.start.epoch, self.sid, excluded, detail)
        return [self.result]


class GroupMember:
    """A member's long-lived view of one group: accepts Starts, runs sessions, keeps epoch keys.

    Feed it every coordinator message for the group (``receive``) and the time (``tick``); send
    what comes back as :class:`Send` events. Epochs only move forward.
    """

    def __init__(
        self,
        *,
        suite: Suite,
        me: MemberIdentity,
        group_id: str,
        coordinator_keys: Iterable[VerifyKey],
        directory: KeyDirectory | None = None,
        rng: Rng = system_rng,
        committed_epoch: int = 0,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        grace_ms: int = DEFAULT_GRACE_MS,
        policy: MemberPolicy = DEFAULT_POLICY,
    ) -> None:
        self.suite = suite
        self.me = me
        self.group_id = group_id
        self.policy = policy
        self.last_refusal: Refused | None = None  # why the newest refused Start was refused
        self.roster_version = -1  # strict profile: the newest operator roster statement accepted
        self.seen_epoch = committed_epoch  # the newest epoch of a coordinator-signed Start naming us
        self._excused: dict[int, set[str]] = {}  # epoch -> members a coordinator Abort timed out
        self._coord = {k.kid: k for k in coordinator_keys}
        self.directory = directory if directory is not None else KeyDirectory()
        self._rng = rng
        self.committed_epoch = committed_epoch
        self._max_skew = max_skew_ms
        self._grace = grace_ms
        self._last_start: tuple[int, int] = (committed_epoch, -1)
        self.session: MemberSession | None = None
        self.current: EpochKeys | None = None
        self.previous: EpochKeys | None = None
        self.counters: Counter[str] = Counter()

    def _drop(self, reason: DropReason, detail: str = "") -> list[Event]:
        self.counters[reason.value] += 1
        return [Dropped(reason, detail)]

    def _refuse(self, start: Start, reason: DropReason, detail: str, *before: Event) -> list[Event]:
        self.counters[reason.value] += 1
        self.last_refusal = Refused(reason, detail, epoch=start.epoch)
        return [*before, self.last_refusal]

    def _judge_roster(self, start: Start, now: int) -> list[Event]:
        """The member's own checks of an end-to-end roster; [] if it may go ahead.

        Every entry but ours must be a non-revoked meter or controller the directory binds to that
        member id, judged against a usable CRL (cached entries included: applying a CRL evicts the
        peers it revokes). What is missing is asked for (KeysNeeded) and the Start fed again.
        """
        d, policy = self.directory, self.policy
        rev = d.revocation
        crl_ok = not policy.require_crl or (rev is not None and rev.usable(now, policy.max_crl_age_ms))
        need: list[bytes] = []
        for e in start.roster:
            if e.kid == self.me.kid:
                continue
            if e.kid in d.revoked_kids:
                return self._refuse(start, DropReason.REVOKED_PEER, f"{d.revoked_kids[e.kid]} is revoked")
            peer = d.get(e.kid)
            if peer is None:
                need.append(e.kid)
            elif peer.member_id != e.member_id:
                return self._refuse(start, DropReason.KEY_MISMATCH, f"{e.member_id} listed with {peer.member_id}'s key")
            elif peer.role not in MEMBER_ROLES:
                return self._refuse(start, DropReason.WRONG_ROLE, f"{e.member_id} is a {peer.role}, not a member role")
        if not crl_ok:
            why = "no CRL" if rev is None else "the newest CRL is expired or too old"
            return self._refuse(start, DropReason.NO_FRESH_CRL, why, KeysNeeded(tuple(need), crl=True))
        if need:
            self.counters[DropReason.UNKNOWN_KEY.value] += 1
            return [KeysNeeded(tuple(need)), Dropped(DropReason.UNKNOWN_KEY, f"{len(need)} peer keys")]
        if policy.strict_roster:
            return self._judge_statement(start)
        return []

    def _judge_statement(self, start: Start) -> list[Event]:
        """Strict roster profile: the Start's roster must come from the newest operator statement."""
        if not start.roster_statement:
            return self._refuse(start, DropReason.ROSTER_UNAUTHORIZED, "the Start carries no operator-signed roster")
        try:
            st = verify_statement(start.roster_statement, self.policy.roster_authorities)
        except DecodeError as exc:
            return self._refuse(start, DropReason.ROSTER_UNAUTHORIZED, f"roster statement: {exc}")
        if st.group_id != start.group_id:
            return self._refuse(
                start, DropReason.ROSTER_UNAUTHORIZED, f"the roster statement is for group {st.group_id}"
            )
        if st.version < self.roster_version:
            return self._refuse(
                start,
                DropReason.ROSTER_UNAUTHORIZED,
                f"roster v{st.version} is older than v{self.roster_version}, accepted",
            )
        listed = set(st.members)
        extra = [e.member_id for e in start.roster if e not in listed]
        if extra:
            return self._refuse(
                start, DropReason.ROSTER_UNAUTHORIZED, f"{extra[0]} is not in the operator's roster v{st.version}"
            )
        left_out = {e.member_id for e in st.members} - {e.member_id for e in start.roster}
        unexcused = sorted(left_out - self._excused.get(start.epoch, set()))
        if unexcused:
            return self._refuse(
                start,
                DropReason.ROSTER_UNAUTHORIZED,
                f"{unexcused[0]} of roster v{st.version} left out without a timeout in epoch {start.epoch}",
            )
        self.roster_version = st.version
        return []

    def receive(self, data: bytes, now: int) -> list[Event]:
        try:
            env = decode(data)
        except DecodeError as exc:
            return self._drop(DropReason.MALFORMED, str(exc))
        if env.msg.TYPE in MEMBER_TYPES:
            return self._drop(DropReason.UNEXPECTED, "member messages reach members only inside bundles")
        key = self._coord.get(env.cose.kid)
        if key is None:
            return self._drop(DropReason.UNKNOWN_KEY, "not signed by a known coordinator")
        if not env.cose.verify(key):
            return self._drop(DropReason.BAD_SIGNATURE, "coordinator signature")
        if isinstance(env.msg, Start):
            return self._on_start(env.msg, now)
        if self.session is None or env.msg.sid != self.session.sid:
            return self._drop(DropReason.OTHER_SESSION)
        return self._track(self.session.handle(env))

    def tick(self, now: int) -> list[Event]:
        return self._track(self.session.tick(now)) if self.session else []

    def get_timer(self) -> int | None:
        return self.session.get_timer() if self.session else None

    def distrust_coordinator(self) -> None:
        """The coordinator's certificate was revoked: accept nothing it signs from now on."""
        self._coord = {}

    @property
    def keyless(self) -> bool:
        """No key for the newest epoch this member saw a valid Start naming it for (even one too old
        to join), and no live session: it restarted or missed a Commit, and should ask (signed) to be
        rekeyed. A restarted meter typically sees only the Start of an epoch already committed."""
        live = self.session is not None and not self.session.is_terminal
        return not live and self.seen_epoch > self.committed_epoch

    def resend(self) -> bytes | None:
        """The last message this member sent in the live session, for transport retries."""
        s = self.session
        return s.last_sent if s is not None and not s.is_terminal else None

    def _track(self, events: list[Event]) -> list[Event]:
        for ev in events:
            if isinstance(ev, Dropped):
                self.counters[ev.reason.value] += 1
            elif isinstance(ev, KeyEstablished):
                self.previous, self.current = self.current, ev.keys
                self.committed_epoch = ev.keys.epoch
                self._excused = {e: m for e, m in self._excused.items() if e > self.committed_epoch}
            elif isinstance(ev, Aborted) and ev.excluded and ev.detail == "timeout":
                self._excused.setdefault(ev.epoch, set()).update(ev.excluded)
        return events

    def _on_start(self, start: Start, now: int) -> list[Event]:
        if start.group_id != self.group_id:
            return self._drop(DropReason.OTHER_SESSION, "start for another group")
        if start.suite != self.suite.name:
            return self._drop(DropReason.MALFORMED, "suite mismatch")
        idx = start.index_of(self.me.member_id)
        if idx is None or start.roster[idx].kid != self.me.kid:
            return self._drop(DropReason.NON_MEMBER, "we are not in this roster")
        sh = _session_hash_of(self.suite, start)
        sid = sid_of(sh)
        if sid != start.sid:
            return self._drop(DropReason.MALFORMED, "sid does not match the Start's fields")
        self.seen_epoch = max(self.seen_epoch, start.epoch)
        if self.session is not None and self.session.sid == sid:
            return self._drop(DropReason.DUPLICATE, "start")
        if start.epoch <= self.committed_epoch:
            return self._drop(DropReason.ROLLBACK, f"epoch {start.epoch} <= committed {self.committed_epoch}")
        if (start.epoch, start.attempt) <= self._last_start:
            return self._drop(DropReason.STALE, "an equal or newer start was already accepted")
        if abs(now - start.issued_at) > self._max_skew or now >= start.deadline:
            return self._drop(DropReason.STALE, "start outside the clock-skew window or past its deadline")
        if start.mode not in self.policy.modes:
            accepted = ", ".join(sorted(m.name.lower() for m in self.policy.modes))
            return self._refuse(
                start,
                DropReason.MODE_REFUSED,
                f"an {start.mode.name.lower()} Start; this member accepts {accepted} only",
            )
        if start.mode == Mode.E2E:
            judged = self._judge_roster(start, now)
            if judged:
                return judged
        events: list[Event] = []
        if self.session is not None and not self.session.is_terminal:
            events += self.session._abort(AbortReason.SUPERSEDED, "a newer start arrived")
        self._last_start = (start.epoch, start.attempt)
        self.session = MemberSession(
            suite=self.suite,
            me=self.me,
            start=start,
            directory=self.directory,
            rng=self._rng,
            grace_ms=self._grace,
            sh=sh,
        )
        return [*events, self.session.first_message()]


def _session_hash_of(suite: Suite, start: Start) -> bytes:
    return session_hash(
        suite,
        start.group_id,
        start.epoch,
        start.attempt,
        start.mode,
        start.nonce,
        start.issued_at,
        start.deadline,
        start.roster,
    )
