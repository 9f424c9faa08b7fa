"""Group data messages: readings and commands protected with an epoch's group key.

Wire format: COSE_Encrypt0 (RFC 9052 §5.2), tag 16, laid out like OSCORE (RFC 8613):

    [ protected  = bstr {1: 1 (A128GCM)},
      unprotected = {3: content type, 4: sender index (bstr), 6: partial IV = seq (bstr), 10: key id},
      ciphertext ]

    nonce        = base IV XOR (sender index as 4 bytes || sequence number as 8 bytes)
    external_aad = ["GridKey v1 data", group, epoch, key id, sender index, seq, content type]

Each sender's sequence numbers start at 0 in every epoch and never repeat, so (key, nonce) pairs are
unique. Receivers keep a sliding replay window per sender. The unprotected fields are bound by the
external AAD, so changing any of them fails authentication.

A *command* (content type 1) carries a COSE_Sign1 from a controller inside the ciphertext: the
group key proves the sender is a member, the signature proves it is the controller, so a meter
that holds the group key still cannot forge a command.

Built by hand on cbor2 + AES-GCM because COSE libraries (cwt included) do not derive nonces from a
base IV, sender id and partial IV the way OSCORE-style group messages need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import cbor2
from cryptography.exceptions import InvalidTag

from ..crypto.signatures import SigningKey
from ..crypto.suite import AEAD_TAG_LEN, Suite
from . import cbor
from .cose import parse_sign1, sign1
from .directory import KeyDirectory
from .errors import DecodeError, DropReason, Rejected
from .keyschedule import EpochKeys

COSE_ENCRYPT0_TAG = 16
ALG_A128GCM = 1
MAX_DATA_MSG = 16 * 1024
DATA_PAGE = 100  # messages per page of GET groups/{g}/data over CoAP: the server pages, the meter reads on
MAX_SEQ = 2**48 - 1
REPLAY_WINDOW = 64
_PROTECTED = cbor.dumps({1: ALG_A128GCM})


class ContentType(IntEnum):
    READING = 0
    COMMAND = 1


@dataclass(frozen=True)
class Delivered:
    """A message that decrypted, passed the replay window and (for commands) the signature check."""

    group_id: str
    epoch: int
    sender_id: str
    seq: int
    content_type: ContentType
    plaintext: bytes  # for commands: the signed command payload


class ReplayWindow:
    """Sliding window over sequence numbers (RFC 4303 §3.4.3 style), one per sender per epoch."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.top = -1
        self.bits = 0  # bit i set => (top - i) seen

    def check(self, seq: int) -> bool:
        if seq > self.top:
            return True
        offset = self.top - seq
        return offset < self.size and not (self.bits >> offset) & 1

    def mark(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)


def _nonce(base_iv: bytes, sender: int, seq: int) -> bytes:
    mix = sender.to_bytes(4, "big") + seq.to_bytes(8, "big")
    return bytes(a ^ b for a, b in zip(base_iv, mix, strict=True))


def _aad(keys: EpochKeys, sender: int, seq: int, ctype: int) -> bytes:
    return cbor.dumps(["GridKey v1 data", keys.group_id, keys.epoch, keys.key_id, sender, seq, ctype])


def _minimal(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


@dataclass
class GroupChannel:
    """One member's sealing and opening state for one epoch."""

    suite: Suite
    keys: EpochKeys
    my_id: str
    directory: KeyDirectory | None = None
    next_seq: int = 0
    _windows: dict[int, ReplayWindow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [e.member_id for e in self.keys.roster]
        if self.my_id not in ids:
            raise ValueError("not a member of this epoch")
        self._my_idx = ids.index(self.my_id)
        self._aead = self.suite.aead(self.keys.aead_key)

    def seal(self, plaintext: bytes, content_type: ContentType = ContentType.READING) -> bytes:
        seq = self.next_seq
        if seq > MAX_SEQ:
            raise OverflowError("sequence numbers exhausted: rekey the group")
        self.next_seq += 1
        ct = self._aead.encrypt(
            _nonce(self.keys.base_iv, self._my_idx, seq),
            plaintext,
            _aad(self.keys, self._my_idx, seq, int(content_type)),
        )
        unprotected = {
            3: int(content_type),
            4: _minimal(self._my_idx),
            6: _minimal(seq),
            10: self.keys.key_id,
        }
        return cbor.dumps(cbor2.CBORTag(COSE_ENCRYPT0_TAG, [_PROTECTED, unprotected, ct]))

    def seal_command(self, command: bytes, controller_key: SigningKey) -> bytes:
        """Sign (as the controller) then encrypt (as a member)."""
        inner = sign1(command, controller_key, self.keys.key_id)
        return self.seal(inner, ContentType.COMMAND)

    def open(self, data: bytes) -> Delivered:
        """Decrypt and check; raises :class:`Rejected` (with a DropReason) on anything wrong."""
        try:
            key_id, sender, seq, ctype, ct = parse_data_message(data)
        except DecodeError as exc:
            raise Rejected(DropReason.MALFORMED, str(exc)) from None
        if key_id != self.keys.key_id:
            raise Rejected(DropReason.OTHER_SESSION, "message is for another epoch's key")
        if sender >= len(self.keys.roster):
            raise Rejected(DropReason.NON_MEMBER, "sender index outside the roster")
        window = self._windows.setdefault(sender, ReplayWindow())
        if not window.check(seq):
            raise Rejected(DropReason.REPLAY, f"sequence number {seq} from sender {sender}")
        try:
            pt = self._aead.decrypt(_nonce(self.keys.base_iv, sender, seq), ct, _aad(self.keys, sender, seq, ctype))
        except InvalidTag:
            raise Rejected(DropReason.BAD_SIGNATURE, "authentication failed") from None
        sender_entry = self.keys.roster[sender]
        if ctype == ContentType.COMMAND:
            pt = self._check_command(pt, sender_entry.kid)
        window.mark(seq)
        return Delivered(self.keys.group_id, self.keys.epoch, sender_entry.member_id, seq, ContentType(ctype), pt)

    def _check_command(self, inner: bytes, sender_kid: bytes) -> bytes:
        try:
            signed = parse_sign1(inner, max_size=MAX_DATA_MSG)
        except DecodeError as exc:
            raise Rejected(DropReason.MALFORMED, f"command is not a signed message: {exc}") from None
        peer = self.directory.get(signed.kid) if self.directory else None
        if peer is None or signed.kid != sender_kid:
            raise Rejected(DropReason.UNKNOWN_KEY, "command signer is not the sending member")
        if peer.role != "controller":
            raise Rejected(DropReason.WRONG_ROLE, f"{peer.member_id} is a {peer.role}, not a controller")
        if not signed.verify(peer.key, self.keys.key_id):
            raise Rejected(DropReason.BAD_SIGNATURE, "command signature")
        return signed.payload


def parse_data_message(data: bytes) -> tuple[bytes, int, int, int, bytes]:
    """(key id, sender index, seq, content type, ciphertext) of a well-formed data message."""
    obj = cbor.loads(data, max_size=MAX_DATA_MSG, allowed_tags=frozenset({COSE_ENCRYPT0_TAG}))
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_ENCRYPT0_TAG:
        raise Rejected(DropReason.MALFORMED, "not a tagged COSE_Encrypt0")
    body = obj.value
    if not (isinstance(body, list) and len(body) == 3 and body[0] == _PROTECTED):
        raise Rejected(DropReason.MALFORMED, "COSE_Encrypt0 must be [{1: A128GCM}, headers, ciphertext]")
    _, hdr, ct = body
    try:
        cbor.check_fields(hdr, {3: int, 4: bytes, 6: bytes, 10: bytes})
    except DecodeError as exc:
        raise Rejected(DropReason.MALFORMED, str(exc)) from None
    sender_b, piv = hdr[4], hdr[6]
    for name, value, limit in (("sender index", sender_b, 4), ("partial IV", piv, 6)):
        if not 1 <= len(value) <= limit or (len(value) > 1 and value[0] == 0):
            raise Rejected(DropReason.MALFORMED, f"{name} must be 1..{limit} bytes, minimal")
    if hdr[3] not in (ContentType.READING, ContentType.COMMAND):
        raise Rejected(DropReason.MALFORMED, "unknown content type")
    if type(ct) is not bytes or len(ct) < AEAD_TAG_LEN:
        raise Rejected(DropReason.MALFORMED, "ciphertext too short")
    if len(hdr[10]) != 8:
        raise Rejected(DropReason.MALFORMED, "key id must be 8 bytes")
    return hdr[10], int.from_bytes(sender_b, "big"), int.from_bytes(piv, "big"), hdr[3], ct


def peek_key_id(data: bytes) -> bytes:
    """Which epoch key a data message needs (so a member can pick current or previous)."""
    return parse_data_message(data)[0]
