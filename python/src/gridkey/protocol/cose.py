"""COSE_Sign1 (RFC 9052 §4.2) with a fixed, minimal header profile.

Profile: protected header ``{1: alg}``, unprotected header ``{4: kid}`` with an 8-byte kid,
attached payload, tag 18. Anything else is rejected. The Sig_structure is
``["Signature1", protected, external_aad, payload]`` (RFC 9052 §4.4).

Written on cbor2 rather than through ``cwt`` because cwt verifies through OpenSSL's Ed25519,
which is about twice as slow as libsodium's here, and signature checks dominate a member's CPU
in end-to-end mode. The test suite cross-checks this module against ``cwt`` in both directions.
"""

from __future__ import annotations

from functools import cache

import cbor2

from ..crypto.signatures import COSE_ALG_EDDSA, COSE_ALG_ES256, KID_LEN, SigningKey, VerifyKey
from . import cbor
from .errors import DecodeError

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_KID = 4


class Sign1:
    """A parsed COSE_Sign1 (a plain slotted class: it is built n times per bundle)."""

    __slots__ = ("alg", "kid", "payload", "protected", "signature")

    def __init__(self, protected: bytes, alg: int, kid: bytes, payload: bytes, signature: bytes) -> None:
        self.protected = protected
        self.alg = alg
        self.kid = kid
        self.payload = payload
        self.signature = signature

    def __repr__(self) -> str:
        return f"Sign1(alg={self.alg}, kid={self.kid.hex()}, payload={len(self.payload)} bytes)"

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        return sig_structure(self.protected, external_aad, self.payload)

    def verify(self, key: VerifyKey, external_aad: bytes = b"") -> bool:
        if key.cose_alg != self.alg or key.kid != self.kid:
            return False
        return key.verify(self.signature, self.to_be_signed(external_aad))


_SIG1_PREFIX = cbor.dumps(["Signature1", b"", b"", b""])[:12]  # array(4), "Signature1"


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """Deterministic CBOR of ["Signature1", protected, external_aad, payload], by concatenation."""
    return _SIG1_PREFIX + cbor.encode_bstr(protected) + cbor.encode_bstr(external_aad) + cbor.encode_bstr(payload)


@cache
def protected_header(alg: int) -> bytes:
    return cbor.dumps({HDR_ALG: alg})


def sign1(payload: bytes, key: SigningKey, external_aad: bytes = b"") -> bytes:
    alg = key.public_key.cose_alg
    protected = protected_header(alg)
    signature = key.sign(sig_structure(protected, external_aad, payload))
    return cbor.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {HDR_KID: key.kid}, payload, signature]))


_SIG_TRAILER = b"\x58\x40"  # bstr(64)


def _profile_prefix(alg: int) -> bytes:
    """Bytes before the kid: tag(18), array(4), bstr(protected {1: alg}), map(1), key 4, bstr(8) head."""
    return bytes([0xD2, 0x84]) + cbor.dumps(protected_header(alg)) + bytes([0xA1, HDR_KID, 0x40 | KID_LEN])


_PREFIXES = {_profile_prefix(alg): alg for alg in (COSE_ALG_EDDSA, COSE_ALG_ES256)}
_PREFIX_LEN = len(next(iter(_PREFIXES)))


def parse_sign1(data: bytes, *, max_size: int) -> Sign1:
    """Strictly parse (not verify) a tagged COSE_Sign1 in GridKey's header profile.

    The profile fixes every byte around the payload, so the envelope is matched against its one
    deterministic encoding instead of walking it generically (this runs n times per bundle).
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("expected bytes")
        data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"message too large ({len(data)} > {max_size} bytes)")
    alg = _PREFIXES.get(data[:_PREFIX_LEN])
    if alg is None:
        raise DecodeError("not a COSE_Sign1 with GridKey's header profile ({1: alg} / {4: kid})")
    kid = data[_PREFIX_LEN : _PREFIX_LEN + KID_LEN]
    start, end = cbor.bstr_span(data, _PREFIX_LEN + KID_LEN)
    if data[end : end + 2] != _SIG_TRAILER or len(data) != end + 2 + 64:
        raise DecodeError("COSE_Sign1 must end with a 64-byte signature")
    if len(kid) != KID_LEN:
        raise DecodeError("truncated kid")
    return Sign1(protected_header(alg), alg, kid, data[start:end], data[end + 2 :])
