"""Protocol messages: payload schemas, encoders and strict decoders.

Every message is a COSE_Sign1 (see :mod:`.cose`) whose payload is a deterministic CBOR map with
small integer keys. Keys 1–3 are common to all messages (type, sid, epoch); the rest are per type.
The decoder rejects unknown, duplicate, missing and mistyped fields and enforces every length, so
a decoded message object is always internally well-formed (validity in a session is checked by
the state machines).

=========  =====  ===========  =========================================================
message    type   signed by    payload fields beyond {1: type, 2: sid, 3: epoch}
=========  =====  ===========  =========================================================
Start      1      coordinator  4 group, 5 suite, 6 roster, 7 mode, 8 nonce, 9 issued_at,
                               10 deadline, 11 attempt, [12 roster statement]
Round1     2      member       4 idx, 5 z
Round2     3      member       4 idx, 5 X          (external_aad = round-1 hash)
Confirm    4      member       4 idx, 5 key_id, 6 tag  (external_aad = transcript hash)
Bundle     5      coordinator  4 round, 5 items
Commit     6      coordinator  4 key_id, 5 tag
Abort      7      coordinator  4 reason, 5 excluded member ids
=========  =====  ===========  =========================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from ..crypto.signatures import KID_LEN, SigningKey
from . import cbor
from .cose import Sign1, parse_sign1, sign1
from .errors import DecodeError

SID_LEN = 16  # the sid on the wire: a label of the 32-byte session hash, for lookups and display
SESSION_HASH_LEN = 32  # what signatures, H1, TH and the key schedule bind (see keyschedule)
NONCE_LEN = 16
KEY_ID_LEN = 8
TAG_LEN = 16
MAX_GROUP_SIZE = 1024
MEMBER_MSG_MAX = 200  # the bar from the paper: a member's round message never exceeds 200 bytes
START_MSG_MAX = 256 + MAX_GROUP_SIZE * 160  # the roster, and the operator's roster statement
BUNDLE_MSG_MAX = 256 + MAX_GROUP_SIZE * (MEMBER_MSG_MAX + 3)
COORDINATOR_MSG_MAX = max(START_MSG_MAX, BUNDLE_MSG_MAX)
MAX_MSG_SIZE = COORDINATOR_MSG_MAX
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
REASON_RE = re.compile(r"[a-z_]{1,32}")


class MsgType(IntEnum):
    START = 1
    ROUND1 = 2
    ROUND2 = 3
    CONFIRM = 4
    BUNDLE = 5
    COMMIT = 6
    ABORT = 7


class Mode(IntEnum):
    """Verification mode: who checks member signatures."""

    E2E = 0  # every member verifies every peer (no trust in the gateway beyond liveness)
    ATTESTED = 1  # the coordinator verifies and signs bundles (a member verifies one signature)


MEMBER_TYPES = frozenset({MsgType.ROUND1, MsgType.ROUND2, MsgType.CONFIRM})


def check_id(value: str, what: str) -> str:
    if not ID_RE.fullmatch(value):
        raise DecodeError(f"{what} must match {ID_RE.pattern}")
    return value


def _check_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise DecodeError(f"{what} must be {n} bytes")


@dataclass(frozen=True, slots=True)
class RosterEntry:
    member_id: str
    kid: bytes


class Message:
    """Common codec. Subclasses list their per-type fields as (key, attribute, CBOR type)."""

    TYPE: ClassVar[MsgType]
    FIELDS: ClassVar[tuple[tuple[int, str, type], ...]]
    OPTIONAL: ClassVar[tuple[tuple[int, str, type], ...]] = ()  # omitted when empty
    SCHEMA: ClassVar[tuple[tuple[int, type], ...]]  # all keys in wire order, set below
    FLAT: ClassVar[bool]  # only scalar fields: decoded by the fast schema reader
    sid: bytes
    epoch: int

    def _validate(self) -> None:
        _check_len(self.sid, SID_LEN, "sid")

    def __post_init__(self) -> None:
        self._validate()

    def to_payload(self) -> bytes:
        m: dict[int, Any] = {1: int(self.TYPE), 2: self.sid, 3: self.epoch}
        for key, name, _ in self.FIELDS:
            m[key] = self._wire(name, getattr(self, name))
        for key, name, _ in self.OPTIONAL:
            if getattr(self, name):
                m[key] = getattr(self, name)
        return cbor.dumps(m)

    def sign(self, key: SigningKey, external_aad: bytes = b"") -> bytes:
        return sign1(self.to_payload(), key, external_aad)

    def _wire(self, name: str, value: Any) -> Any:
        return value

    @classmethod
    def _from_wire(cls, name: str, value: Any) -> Any:
        return value

    @classmethod
    def from_map(cls, m: dict) -> Message:
        spec = {1: int, 2: bytes, 3: int} | {key: typ for key, _, typ in cls.FIELDS}
        cbor.check_fields(m, spec, {key: typ for key, _, typ in cls.OPTIONAL})
        kwargs = {name: cls._from_wire(name, m[key]) for key, name, _ in cls.FIELDS}
        for key, name, _ in cls.OPTIONAL:
            if key in m:
                if not m[key]:
                    raise DecodeError(f"field {key} is present but empty (omit it instead)")
                kwargs[name] = m[key]
        return cls(sid=m[2], epoch=m[3], **kwargs)  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class Start(Message):
    TYPE = MsgType.START
    FIELDS = (
        (4, "group_id", str),
        (5, "suite", str),
        (6, "roster", list),
        (7, "mode", int),
        (8, "nonce", bytes),
        (9, "issued_at", int),
        (10, "deadline", int),
        (11, "attempt", int),
    )
    OPTIONAL = ((12, "roster_statement", bytes),)  # strict roster profile: the operator's signed roster
    sid: bytes
    epoch: int
    group_id: str
    suite: str
    roster: tuple[RosterEntry, ...]
    mode: Mode
    nonce: bytes
    issued_at: int  # unix milliseconds
    deadline: int  # unix milliseconds
    attempt: int
    roster_statement: bytes = b""

    def _validate(self) -> None:
        Message._validate(self)
        check_id(self.group_id, "group id")
        if self.suite not in ("GK1", "GK2"):
            raise DecodeError("unknown suite")
        _check_len(self.nonce, NONCE_LEN, "nonce")
        if not 2 <= len(self.roster) <= MAX_GROUP_SIZE:
            raise DecodeError(f"roster must have 2..{MAX_GROUP_SIZE} members")
        ids = [e.member_id for e in self.roster]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise DecodeError("roster must be sorted by member id, without duplicates")
        if len({e.kid for e in self.roster}) != len(self.roster):
            raise DecodeError("roster kids must be unique")
        if self.deadline <= self.issued_at:
            raise DecodeError("deadline must be after issued_at")

    def _wire(self, name: str, value: Any) -> Any:
        if name == "roster":
            return [[e.member_id, e.kid] for e in value]
        return int(value) if name == "mode" else value

    @classmethod
    def _from_wire(cls, name: str, value: Any) -> Any:
        if name == "mode":
            try:
                return Mode(value)
            except ValueError:
                raise DecodeError("unknown verification mode") from None
        if name != "roster":
            return value
        entries = []
        for item in value:
            if not (isinstance(item, list) and len(item) == 2):
                raise DecodeError("roster entry must be [member id, kid]")
            member_id, kid = item
            if type(member_id) is not str or type(kid) is not bytes:
                raise DecodeError("roster entry has wrong types")
            check_id(member_id, "member id")
            _check_len(kid, KID_LEN, "kid")
            entries.append(RosterEntry(member_id, kid))
        return tuple(entries)

    @property
    def n(self) -> int:
        return len(self.roster)

    def index_of(self, member_id: str) -> int | None:
        for i, e in enumerate(self.roster):
            if e.member_id == member_id:
                return i
        return None


@dataclass(frozen=True, slots=True)
class Round1(Message):
    TYPE = MsgType.ROUND1
    FIELDS = ((4, "idx", int), (5, "z", bytes))
    sid: bytes
    epoch: int
    idx: int
    z: bytes


@dataclass(frozen=True, slots=True)
class Round2(Message):
    TYPE = MsgType.ROUND2
    FIELDS = ((4, "idx", int), (5, "x", bytes))
    sid: bytes
    epoch: int
    idx: int
    x: bytes


@dataclass(frozen=True, slots=True)
class Confirm(Message):
    TYPE = MsgType.CONFIRM
    FIELDS = ((4, "idx", int), (5, "key_id", bytes), (6, "tag", bytes))
    sid: bytes
    epoch: int
    idx: int
    key_id: bytes
    tag: bytes

    def _validate(self) -> None:
        Message._validate(self)
        _check_len(self.key_id, KEY_ID_LEN, "key id")
        _check_len(self.tag, TAG_LEN, "tag")


@dataclass(frozen=True, slots=True)
class Bundle(Message):
    """All members' messages for one round, in ring order.

    End-to-end mode: ``items`` are the members' signed messages. Attested mode: ``items`` are the
    bare group elements (z or X), vouched for by the coordinator's signature on the bundle.
    """

    TYPE = MsgType.BUNDLE
    FIELDS = ((4, "round", int), (5, "items", list))
    sid: bytes
    epoch: int
    round: int
    items: tuple[bytes, ...]

    def _validate(self) -> None:
        Message._validate(self)
        if self.round not in (1, 2):
            raise DecodeError("bundle round must be 1 or 2")
        if not 2 <= len(self.items) <= MAX_GROUP_SIZE:
            raise DecodeError("bundle size out of range")

    def _wire(self, name: str, value: Any) -> Any:
        return list(value) if name == "items" else value

    @classmethod
    def _from_wire(cls, name: str, value: Any) -> Any:
        if name == "items":
            if not all(type(v) is bytes and len(v) <= MEMBER_MSG_MAX for v in value):
                raise DecodeError("bundle items must be byte strings of at most 200 bytes")
            return tuple(value)
        return value


@dataclass(frozen=True, slots=True)
class Commit(Message):
    TYPE = MsgType.COMMIT
    FIELDS = ((4, "key_id", bytes), (5, "tag", bytes))
    sid: bytes
    epoch: int
    key_id: bytes
    tag: bytes

    def _validate(self) -> None:
        Message._validate(self)
        _check_len(self.key_id, KEY_ID_LEN, "key id")
        _check_len(self.tag, TAG_LEN, "tag")


@dataclass(frozen=True, slots=True)
class Abort(Message):
    TYPE = MsgType.ABORT
    FIELDS = ((4, "reason", str), (5, "excluded", list))
    sid: bytes
    epoch: int
    reason: str
    excluded: tuple[str, ...]

    def _validate(self) -> None:
        Message._validate(self)
        if not REASON_RE.fullmatch(self.reason):
            raise DecodeError("abort reason must be a short lowercase code")

    def _wire(self, name: str, value: Any) -> Any:
        return list(value) if name == "excluded" else value

    @classmethod
    def _from_wire(cls, name: str, value: Any) -> Any:
        if name == "excluded":
            if not all(type(v) is str for v in value):
                raise DecodeError("excluded must be member ids")
            return tuple(check_id(v, "member id") for v in value)
        return value


MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (Start, Round1, Round2, Confirm, Bundle, Commit, Abort)
}
for _cls in MESSAGE_CLASSES.values():
    _cls.SCHEMA = ((1, int), (2, bytes), (3, int), *((key, typ) for key, _, typ in _cls.FIELDS))
    _cls.FLAT = all(typ in (int, bytes, str) for _, typ in _cls.SCHEMA)


def member_payload_prefix(mtype: MsgType, sid: bytes, epoch: int, idx: int) -> bytes:
    """Payload bytes of a Round1/Round2 up to its element's byte-string head (exclusive)."""
    return cbor.dumps({1: int(mtype), 2: sid, 3: epoch, 4: idx, 5: b""})[:-1]  # drop the empty bstr


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed (not yet verified) signed message: the COSE layer plus its decoded payload."""

    cose: Sign1
    msg: Message
    raw: bytes


def decode(data: bytes, *, max_size: int = MAX_MSG_SIZE) -> Envelope:
    """Strictly decode any protocol message. Raises only :class:`DecodeError`."""
    try:
        sign1_msg = parse_sign1(data, max_size=max_size)
        payload = sign1_msg.payload
        # Deterministic encoding puts field 1 (the type, a uint < 24) right after the map head.
        if len(payload) < 3 or payload[1] != 1 or payload[2] >= 24:
            raise DecodeError("payload must be a map starting with a small message type")
        cls = MESSAGE_CLASSES.get(payload[2])
        if cls is None:
            raise DecodeError(f"unknown message type {payload[2]}")
        if cls.TYPE in MEMBER_TYPES and len(data) > MEMBER_MSG_MAX:
            raise DecodeError("member message larger than 200 bytes")
        if cls.FLAT:
            values = cbor.read_flat_map(payload, cls.SCHEMA)
            msg = cls(*values[1:])  # type: ignore[call-arg]
        else:
            msg = cls.from_map(cbor.loads(payload, max_size=max_size))
        return Envelope(sign1_msg, msg, bytes(data))
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"malformed message: {type(exc).__name__}") from None
