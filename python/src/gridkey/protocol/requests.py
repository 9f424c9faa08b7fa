"""Signed requests a meter sends to its gateway outside a negotiation: enrol, rejoin, refusal.

Meters authenticate with their COSE signatures, not bearer tokens. A request is a COSE_Sign1 by the
meter's own key over ``{1: kind, 2: meter id, 3: timestamp (ms), 4: group id?, 5: certificate DER?,
6: epoch?, 7: reason?, 8: detail?}``. Enrolment carries the certificate and so proves possession of
its key; the gateway checks the timestamp against its clock to bound replays. A refusal tells the
operator why a member refused a Start (epoch, reason, detail): it is a report, never an instruction
-- a gateway that drops it only hides the refusal from its own operators, the member still refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..crypto.signatures import SigningKey
from . import cbor
from .cose import Sign1, parse_sign1, sign1
from .errors import REFUSAL_REASONS, DecodeError
from .messages import check_id

MAX_REQUEST = 4096
KINDS = ("enroll", "rejoin", "refusal")
MAX_EPOCH = 2**63  # epochs are stored as signed 64-bit integers
MAX_DETAIL = 200  # characters of a refusal's detail the gateway keeps and shows (LwM2M Last Error)


@dataclass(frozen=True)
class MeterRequest:
    kind: str
    meter_id: str
    ts: int
    group_id: str | None = None
    cert_der: bytes | None = None
    epoch: int | None = None  # rejoin: the member's committed epoch; refusal: the refused Start's
    reason: str | None = None  # refusal: one of REFUSAL_REASONS
    detail: str | None = None  # refusal: the member's explanation, at most MAX_DETAIL characters

    def sign(self, key: SigningKey) -> bytes:
        m: dict = {1: self.kind, 2: self.meter_id, 3: self.ts}
        if self.group_id is not None:
            m[4] = self.group_id
        if self.cert_der is not None:
            m[5] = self.cert_der
        if self.epoch is not None:
            m[6] = self.epoch
        if self.reason is not None:
            m[7] = self.reason
        if self.detail is not None:
            m[8] = self.detail
        return sign1(cbor.dumps(m), key, b"GridKey v1 meter request")


def parse_request(data: bytes) -> tuple[Sign1, MeterRequest]:
    """Strictly decode (not verify) a meter request. Raises only :class:`DecodeError`."""
    s1 = parse_sign1(data, max_size=MAX_REQUEST)
    m = cbor.loads(s1.payload, max_size=MAX_REQUEST)
    cbor.check_fields(m, {1: str, 2: str, 3: int}, {4: str, 5: bytes, 6: int, 7: str, 8: str})
    if m[1] not in KINDS:
        raise DecodeError(f"unknown request kind {m[1]!r}")
    check_id(m[2], "meter id")
    if m.get(6, 0) >= MAX_EPOCH:
        raise DecodeError("epoch out of range")
    if 4 in m:
        check_id(m[4], "group id")
    if m[1] == "enroll" and 5 not in m:
        raise DecodeError("an enrol request carries the meter's certificate")
    if m[1] == "refusal":
        if not {4, 6, 7} <= m.keys():
            raise DecodeError("a refusal names its group, the refused epoch and a reason")
        if m[7] not in REFUSAL_REASONS:
            raise DecodeError(f"unknown refusal reason {m[7]!r}")
        if len(m.get(8, "")) > MAX_DETAIL or not m.get(8, "").isprintable():
            raise DecodeError(f"a refusal's detail is printable text of at most {MAX_DETAIL} characters")
    elif 7 in m or 8 in m:
        raise DecodeError("only a refusal carries a reason")
    return s1, MeterRequest(m[1], m[2], m[3], m.get(4), m.get(5), m.get(6), m.get(7), m.get(8))


def verify_request(s1: Sign1, key) -> bool:
    return s1.verify(key, b"GridKey v1 meter request")
