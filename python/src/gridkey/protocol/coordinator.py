"""The coordinator's side of one negotiation: a pure state machine.

The coordinator authenticates membership and relays rounds; it never holds r_i or K. It verifies
every member signature it receives (in both modes) so that injected or tampered messages are
dropped before they can poison a bundle, and it commits only when all n key-confirmation tags and
key ids agree.

    state     accepts    on the n-th valid message          then
    -------   --------   --------------------------------   -------
    round1    Round1     broadcast Bundle(1)                round2
    round2    Round2     broadcast Bundle(2)                confirm
    confirm   Confirm    all equal: broadcast Commit        committed
                         otherwise: broadcast Abort         aborted
    any live  tick(now ≥ deadline): broadcast Abort(timeout, excluded = members still missing)

A message that does not fit is dropped and counted (``counters``), never fatal. The whole session
round-trips through :meth:`to_record` / :meth:`from_record`, so a coordinator process can be killed
and another one (or a replica) continues from the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..crypto.groups import InvalidElement, Rng
from ..crypto.rng import system_rng
from ..crypto.signatures import SigningKey, VerifyKey
from ..crypto.suite import Suite
from .errors import AbortReason, DecodeError, DropReason
from .events import Aborted, Accepted, Broadcast, Committed, Dropped, Event, RoundComplete
from .keyschedule import round1_hash, session_hash, sid_of, transcript_hash
from .messages import (
    MEMBER_MSG_MAX,
    MEMBER_TYPES,
    NONCE_LEN,
    Abort,
    Bundle,
    Commit,
    Confirm,
    Envelope,
    Mode,
    MsgType,
    RosterEntry,
    Round1,
    Round2,
    Start,
    decode,
)


class CoordState(StrEnum):
    ROUND1 = "round1"
    ROUND2 = "round2"
    CONFIRM = "confirm"
    COMMITTED = "committed"
    ABORTED = "aborted"


_ROUND_OF_STATE = {CoordState.ROUND1: 1, CoordState.ROUND2: 2, CoordState.CONFIRM: 3}
_ROUND_OF_TYPE = {MsgType.ROUND1: 1, MsgType.ROUND2: 2, MsgType.CONFIRM: 3}
_NEXT_STATE = {1: CoordState.ROUND2, 2: CoordState.CONFIRM}


@dataclass(frozen=True)
class _Member:
    idx: int
    entry: RosterEntry
    key: VerifyKey


class CoordinatorSession:
    """One negotiation for one group epoch, from Start to Commit or Abort."""

    def __init__(
        self,
        *,
        suite: Suite,
        signing_key: SigningKey,
        group_id: str,
        epoch: int,
        members: Sequence[tuple[str, VerifyKey]],
        now: int,
        mode: Mode = Mode.E2E,
        timeout_ms: int = 10_000,
        attempt: int = 0,
        rng: Rng = system_rng,
        roster_statement: bytes = b"",
        _start: tuple[Start, bytes] | None = None,
    ) -> None:
        self.suite = suite
        self._key = signing_key
        ordered = sorted(members, key=lambda m: m[0])
        for _, key in ordered:
            if not suite.accepts_key(key):
                raise ValueError(f"member key {key.kid.hex()} is not a {suite.signature_scheme} key")
        roster = tuple(RosterEntry(mid, key.kid) for mid, key in ordered)
        if _start is None:
            nonce = rng(NONCE_LEN)
            deadline = now + timeout_ms
            sh = session_hash(suite, group_id, epoch, attempt, mode, nonce, now, deadline, roster)
            start = Start(
                sid_of(sh), epoch, group_id, suite.name, roster, mode, nonce, now, deadline, attempt, roster_statement
            )
            start_bytes = start.sign(signing_key)
        else:
            start, start_bytes = _start
            if start.roster != roster:
                raise ValueError("stored Start does not match the member keys given")
            sh = session_hash(
                suite, group_id, epoch, start.attempt, start.mode, start.nonce, start.issued_at, start.deadline, roster
            )
        self.session_hash = sh  # what Round1 signatures, H1 and TH bind; the sid is its label
        self.start = start
        self.start_message = start_bytes
        self._members = [_Member(i, e, key) for i, (e, (_, key)) in enumerate(zip(roster, ordered, strict=True))]
        self._by_kid = {m.entry.kid: m for m in self._members}
        self.state = CoordState.ROUND1
        self._slots: dict[int, dict[int, Envelope]] = {1: {}, 2: {}, 3: {}}
        self._seen_z: set[bytes] = set()
        self._h1 = b""
        self._th = b""
        self.broadcasts: dict[str, bytes] = {"start": start_bytes}
        self.counters: Counter[str] = Counter()
        self.result: Committed | Aborted | None = None

    # --- properties -------------------------------------------------------------------------

    @property
    def sid(self) -> bytes:
        return self.start.sid

    @property
    def epoch(self) -> int:
        return self.start.epoch

    @property
    def n(self) -> int:
        return len(self._members)

    @property
    def mode(self) -> Mode:
        return self.start.mode

    @property
    def deadline(self) -> int:
        return self.start.deadline

    @property
    def is_terminal(self) -> bool:
        return self.state in (CoordState.COMMITTED, CoordState.ABORTED)

    def get_timer(self) -> int | None:
        """When :meth:`tick` next needs to run (unix ms), or None once the session has ended."""
        return None if self.is_terminal else self.deadline

    def missing(self) -> tuple[str, ...]:
        """Members whose message for the current round has not arrived."""
        rnd = _ROUND_OF_STATE.get(self.state)
        if rnd is None:
            return ()
        return tuple(m.entry.member_id for m in self._members if m.idx not in self._slots[rnd])

    # --- input ------------------------------------------------------------------------------

    def receive(self, data: bytes, now: int) -> list[Event]:
        """Feed one member message (Round1, Round2 or Confirm) received from the network."""
        try:
            env = decode(data, max_size=MEMBER_MSG_MAX)
        except DecodeError as exc:
            return self._drop(DropReason.MALFORMED, str(exc))
        msg = env.msg
        if msg.TYPE not in MEMBER_TYPES:
            return self._drop(DropReason.UNEXPECTED, f"{msg.TYPE.name} is not a member message")
        if msg.sid != self.sid or msg.epoch != self.epoch:
            return self._drop(DropReason.OTHER_SESSION)
        member = self._by_kid.get(env.cose.kid)
        if member is None:
            return self._drop(DropReason.NON_MEMBER, env.cose.kid.hex())
        if msg.idx != member.idx:  # type: ignore[attr-defined]
            return self._drop(DropReason.MALFORMED, "idx does not match the signer's ring position")
        rnd = _ROUND_OF_TYPE[msg.TYPE]
        slot = self._slots[rnd]
        if member.idx in slot:
            same = slot[member.idx].cose.payload == env.cose.payload
            return self._drop(DropReason.DUPLICATE if same else DropReason.EQUIVOCATION)
        if self.is_terminal or rnd != _ROUND_OF_STATE[self.state]:
            return self._drop(DropReason.UNEXPECTED, f"round {rnd} message in state {self.state}")
        aad = {1: self.session_hash, 2: self._h1, 3: self._th}[rnd]
        if not env.cose.verify(member.key, aad):
            return self._drop(DropReason.BAD_SIGNATURE, member.entry.member_id)
        problem = self._check_value(msg)
        if problem:
            return self._drop(DropReason.INVALID_ELEMENT, problem)
        slot[member.idx] = env
        if isinstance(msg, Round1):
            self._seen_z.add(msg.z)
        accepted = Accepted(rnd, member.idx, env.raw)
        if len(slot) < self.n:
            return [accepted]
        return [accepted, *self._complete_round(rnd)]

    def tick(self, now: int) -> list[Event]:
        """Advance time: past the deadline, abort and name the members that did not answer."""
        if self.is_terminal or now < self.deadline:
            return []
        return self._abort(AbortReason.TIMEOUT, self.missing(), "deadline passed")

    def cancel(self, reason: AbortReason = AbortReason.CANCELLED, detail: str = "") -> list[Event]:
        """Abort on the caller's behalf (e.g. a join arrived and a new session supersedes this one)."""
        if self.is_terminal:
            return []
        return self._abort(reason, (), detail)

    # --- internals --------------------------------------------------------------------------

    def _drop(self, reason: DropReason, detail: str = "") -> list[Event]:
        self.counters[reason.value] += 1
        return [Dropped(reason, detail)]

    def _check_value(self, msg: object) -> str:
        group = self.suite.group
        try:
            if isinstance(msg, Round1):
                group.decode(msg.z)
                if msg.z in self._seen_z:
                    return "z repeats another member's value"
            elif isinstance(msg, Round2):
                if self.n == 2:
                    if msg.x != group.identity_encoding:
                        return "X must be the identity for n = 2"
                else:
                    group.decode(msg.x)
        except InvalidElement as exc:
            return str(exc)
        return ""

    def _ordered(self, rnd: int) -> list[Envelope]:
        slot = self._slots[rnd]
        return [slot[i] for i in range(self.n)]

    def _bundle(self, rnd: int, values: list[bytes]) -> bytes:
        items = [e.raw for e in self._ordered(rnd)] if self.mode == Mode.E2E else values
        return Bundle(self.sid, self.epoch, rnd, tuple(items)).sign(self._key)

    def _complete_round(self, rnd: int) -> list[Event]:
        msgs = [e.msg for e in self._ordered(rnd)]
        if rnd == 3:
            return self._finish(msgs)  # type: ignore[arg-type]
        if rnd == 1:
            values = [m.z for m in msgs]  # type: ignore[attr-defined]
            self._h1 = round1_hash(self.suite, self.session_hash, values)
        else:
            values = [m.x for m in msgs]  # type: ignore[attr-defined]
            zs = [m.z for m in (e.msg for e in self._ordered(1))]  # type: ignore[attr-defined]
            self._th = transcript_hash(self.suite, self.session_hash, zs, values)
        data = self._bundle(rnd, values)
        self.broadcasts[f"bundle{rnd}"] = data
        self.state = _NEXT_STATE[rnd]
        return [RoundComplete(rnd), Broadcast(data, f"bundle{rnd}")]

    def _finish(self, confirms: list[Confirm]) -> list[Event]:
        first = confirms[0]
        if any(c.key_id != first.key_id or c.tag != first.tag for c in confirms):
            return self._abort(AbortReason.CONFIRM_MISMATCH, (), "members derived different keys")
        data = Commit(self.sid, self.epoch, first.key_id, first.tag).sign(self._key)
        self.broadcasts["commit"] = data
        self.state = CoordState.COMMITTED
        members = tuple(m.entry.member_id for m in self._members)
        self.result = Committed(self.start.group_id, self.epoch, self.sid, first.key_id, members)
        return [RoundComplete(3), Broadcast(data, "commit"), self.result]

    def _abort(self, reason: AbortReason, excluded: tuple[str, ...], detail: str) -> list[Event]:
        data = Abort(self.sid, self.epoch, reason.value, excluded).sign(self._key)
        self.broadcasts["abort"] = data
        self.state = CoordState.ABORTED
        self.result = Aborted(reason, self.epoch, self.sid, excluded, detail)
        return [Broadcast(data, "abort"), self.result]

    # --- persistence ------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """Everything needed to resume, as CBOR/JSON-friendly primitives (no private keys)."""
        return {
            "start": self.start_message,
            "state": self.state.value,
            "messages": {str(r): [e.raw for _, e in sorted(s.items())] for r, s in self._slots.items()},
            "broadcasts": dict(self.broadcasts),
            "counters": dict(self.counters),
        }

    @classmethod
    def from_record(
        cls,
        record: dict[str, Any],
        *,
        suite: Suite,
        signing_key: SigningKey,
        members: Sequence[tuple[str, VerifyKey]],
    ) -> CoordinatorSession:
        """Rebuild a session from :meth:`to_record` output. Stored messages were verified on arrival."""
        env = decode(record["start"])
        start = env.msg
        if not isinstance(start, Start):
            raise DecodeError("record does not hold a Start message")
        self = cls(
            suite=suite,
            signing_key=signing_key,
            group_id=start.group_id,
            epoch=start.epoch,
            members=members,
            now=start.issued_at,
            mode=start.mode,
            attempt=start.attempt,
            _start=(start, record["start"]),
        )
        for rnd in (1, 2, 3):
            for raw in record["messages"].get(str(rnd), []):
                e = decode(raw, max_size=MEMBER_MSG_MAX)
                self._slots[rnd][e.msg.idx] = e  # type: ignore[attr-defined]
                if isinstance(e.msg, Round1):
                    self._seen_z.add(e.msg.z)
        self.state = CoordState(record["state"])
        if self.state in (CoordState.CONFIRM, CoordState.COMMITTED) or (
            self.state == CoordState.ABORTED and len(self._slots[2]) == self.n
        ):
            zs = [e.msg.z for e in self._ordered(1)]  # type: ignore[attr-defined]
            xs = [e.msg.x for e in self._ordered(2)]  # type: ignore[attr-defined]
            self._h1 = round1_hash(suite, self.session_hash, zs)
            self._th = transcript_hash(suite, self.session_hash, zs, xs)
        elif self.state == CoordState.ROUND2:
            self._h1 = round1_hash(suite, self.session_hash, [e.msg.z for e in self._ordered(1)])  # type: ignore[attr-defined]
        self.broadcasts = dict(record.get("broadcasts", {}))
        self.counters = Counter(record.get("counters", {}))
        return self
