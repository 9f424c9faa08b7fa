"""Roster statements: the strict roster profile, where an operator, not the gateway, decides who
is in a group (docs/protocol.md §4.4).

An ``operator`` identity (the head-end) signs ``{1: group, 2: version, 3: [[member id, kid], ...]}``
(COSE_Sign1, external_aad ``"GridKey v1 roster statement"``). The gateway carries the newest one in
every Start (field 12). A member provisioned with the operator's key accepts an end-to-end Start
only if it carries a statement that operator signed for this group, no older than any it accepted,
naming every roster entry; a statement member may be left out only after a coordinator Abort of
the same epoch excluded it for timeout. So the gateway can delay a member, never add one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..crypto.signatures import KID_LEN, SigningKey, VerifyKey
from . import cbor
from .cose import Sign1, parse_sign1, sign1
from .errors import DecodeError
from .messages import MAX_GROUP_SIZE, START_MSG_MAX, RosterEntry, check_id

ROSTER_AAD = b"GridKey v1 roster statement"


@dataclass(frozen=True)
class RosterStatement:
    group_id: str
    version: int
    members: tuple[RosterEntry, ...]

    def __post_init__(self) -> None:
        check_id(self.group_id, "group id")
        ids = [e.member_id for e in self.members]
        if not 1 <= len(ids) <= MAX_GROUP_SIZE or ids != sorted(ids) or len(set(ids)) != len(ids):
            raise DecodeError("statement members must be 1..1024 ids, sorted, without duplicates")
        for e in self.members:
            check_id(e.member_id, "member id")
            if len(e.kid) != KID_LEN:
                raise DecodeError("kid must be 8 bytes")

    def sign(self, key: SigningKey) -> bytes:
        payload = cbor.dumps({1: self.group_id, 2: self.version, 3: [[e.member_id, e.kid] for e in self.members]})
        return sign1(payload, key, ROSTER_AAD)


def parse_statement(data: bytes) -> tuple[Sign1, RosterStatement]:
    """Strictly decode (not verify) a roster statement. Raises only :class:`DecodeError`."""
    s1 = parse_sign1(data, max_size=START_MSG_MAX)
    m = cbor.check_fields(cbor.loads(s1.payload, max_size=START_MSG_MAX), {1: str, 2: int, 3: list})
    members = []
    for item in m[3]:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is str and type(item[1]) is bytes):
            raise DecodeError("statement member must be [member id, kid]")
        members.append(RosterEntry(item[0], item[1]))
    return s1, RosterStatement(m[1], m[2], tuple(members))


def verify_statement(data: bytes, authorities: tuple[VerifyKey, ...]) -> RosterStatement:
    """The statement, if one of ``authorities`` signed it; DecodeError with the reason otherwise."""
    s1, st = parse_statement(data)
    key = next((k for k in authorities if k.kid == s1.kid), None)
    if key is None or not s1.verify(key, ROSTER_AAD):
        raise DecodeError("not signed by an operator this member trusts")
    return st
