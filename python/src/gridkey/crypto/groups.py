"""Prime-order groups for Burmester–Desmedt: ristretto255 (GK1) and P-256 (GK2).

Both groups expose the same small interface so the protocol core never branches on the suite.
Decoding is strict: a value that is not the canonical encoding of a non-identity group element is
rejected with :class:`InvalidElement`. Scalars are integers reduced mod the group order on the way
in, and encoded in the library's native byte order on the way out (little-endian for ristretto255,
big-endian for P-256), which is also how the published test vectors print them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import rbcl
from Crypto.PublicKey.ECC import EccPoint
from cryptography.hazmat.primitives.asymmetric import ec

Rng = Callable[[int], bytes]
Element = Any  # opaque: bytes for ristretto255, EccPoint for P-256


class InvalidElement(ValueError):
    """Bytes that are not the canonical encoding of a valid, non-identity group element."""


class InvalidScalar(ValueError):
    """Bytes that are not a canonical, non-zero scalar."""


class Group(ABC):
    """The operations BD needs, on opaque elements and integer scalars."""

    name: str
    order: int
    element_len: int
    scalar_len: int
    identity_encoding: bytes

    def random_scalar(self, rng: Rng) -> int:
        """A uniform non-zero scalar from 64 (or 48) random bytes, so the modular bias is negligible."""
        while True:
            s = int.from_bytes(rng(self.scalar_len + 16), "big") % self.order
            if s:
                return s

    def scalar_decode(self, data: bytes) -> int:
        if len(data) != self.scalar_len:
            raise InvalidScalar("wrong scalar length")
        s = self._scalar_from_bytes(data)
        if not 0 < s < self.order:
            raise InvalidScalar("scalar out of range or zero")
        return s

    @abstractmethod
    def scalar_encode(self, s: int) -> bytes: ...

    @abstractmethod
    def _scalar_from_bytes(self, data: bytes) -> int: ...

    @abstractmethod
    def base_mult(self, s: int) -> Element: ...

    @abstractmethod
    def mult(self, s: int, p: Element) -> Element:
        """s·P; raises InvalidElement if the result is the identity."""

    @abstractmethod
    def add(self, p: Element, q: Element) -> Element: ...

    @abstractmethod
    def sub(self, p: Element, q: Element) -> Element: ...

    @abstractmethod
    def is_identity(self, p: Element) -> bool: ...

    @abstractmethod
    def encode(self, p: Element) -> bytes:
        """Canonical encoding; the identity encodes as ``identity_encoding``."""

    @abstractmethod
    def decode(self, data: bytes) -> Element:
        """Strict decode of a non-identity element."""

    def equal(self, p: Element, q: Element) -> bool:
        return self.encode(p) == self.encode(q)


class Ristretto255(Group):
    """ristretto255 (RFC 9496) via libsodium as bundled by ``rbcl``.

    Elements are kept as their 32-byte canonical encodings because libsodium's API works on
    encodings. Every external input is checked with ``is_valid_point`` first: libsodium's add/sub
    silently return the identity for invalid input, so validating at the boundary is essential.
    """

    name = "ristretto255"
    order = 2**252 + 27742317777372353535851937790883648493
    element_len = 32
    scalar_len = 32
    identity_encoding = bytes(32)

    def scalar_encode(self, s: int) -> bytes:
        return (s % self.order).to_bytes(32, "little")

    def _scalar_from_bytes(self, data: bytes) -> int:
        return int.from_bytes(data, "little")

    def base_mult(self, s: int) -> bytes:
        try:
            return rbcl.crypto_scalarmult_ristretto255_base(self.scalar_encode(s))
        except RuntimeError as exc:  # zero scalar
            raise InvalidScalar(str(exc)) from None

    def mult(self, s: int, p: bytes) -> bytes:
        try:
            return rbcl.crypto_scalarmult_ristretto255(self.scalar_encode(s), p)
        except RuntimeError:
            raise InvalidElement("scalar multiplication gave the identity") from None

    def add(self, p: bytes, q: bytes) -> bytes:
        return rbcl.crypto_core_ristretto255_add(p, q)

    def sub(self, p: bytes, q: bytes) -> bytes:
        return rbcl.crypto_core_ristretto255_sub(p, q)

    def is_identity(self, p: bytes) -> bool:
        return p == self.identity_encoding

    def encode(self, p: bytes) -> bytes:
        return bytes(p)

    def decode(self, data: bytes) -> bytes:
        if not isinstance(data, bytes | bytearray) or len(data) != 32:
            raise InvalidElement("ristretto255 element must be 32 bytes")
        data = bytes(data)
        if data == self.identity_encoding:
            raise InvalidElement("identity element")
        # RFC 9496 §4.3.1: only the canonical encoding decodes. The libsodium bundled by rbcl 1.0
        # ignores bit 255 (so 00..80 decoded as the identity, and p|0x80 as p); its re-encoding
        # (p + identity) is canonical, so comparing with it rejects every alias, whatever libsodium
        # lets through.
        if data[31] & 0x80 or not rbcl.crypto_core_ristretto255_is_valid_point(data):
            raise InvalidElement("not a canonical ristretto255 encoding")
        if rbcl.crypto_core_ristretto255_add(data, self.identity_encoding) != data:
            raise InvalidElement("not a canonical ristretto255 encoding")
        return data


class P256(Group):
    """NIST P-256 with compressed SEC1 encodings.

    Arithmetic comes from pycryptodome (constant-time, blinded scalar multiplication); point
    decoding and validation from OpenSSL via ``cryptography``, which rejects points off the curve.
    """

    name = "P-256"
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    element_len = 33
    scalar_len = 32
    identity_encoding = b"\x00"  # SEC1 encoding of the point at infinity

    def __init__(self) -> None:
        gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
        gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
        self._g = EccPoint(gx, gy, "p256")

    def scalar_encode(self, s: int) -> bytes:
        return (s % self.order).to_bytes(32, "big")

    def _scalar_from_bytes(self, data: bytes) -> int:
        return int.from_bytes(data, "big")

    def base_mult(self, s: int) -> EccPoint:
        if s % self.order == 0:
            raise InvalidScalar("zero scalar")
        return self._g * (s % self.order)

    def mult(self, s: int, p: EccPoint) -> EccPoint:
        r = p * (s % self.order)
        if r.is_point_at_infinity():
            raise InvalidElement("scalar multiplication gave the identity")
        return r

    def add(self, p: EccPoint, q: EccPoint) -> EccPoint:
        return p + q

    def sub(self, p: EccPoint, q: EccPoint) -> EccPoint:
        return p + (-q)

    def is_identity(self, p: EccPoint) -> bool:
        return p.is_point_at_infinity()

    def encode(self, p: EccPoint) -> bytes:
        if p.is_point_at_infinity():
            return self.identity_encoding
        x, y = (int(c) for c in p.xy)
        return bytes([2 | (y & 1)]) + x.to_bytes(32, "big")

    def decode(self, data: bytes) -> EccPoint:
        if not isinstance(data, bytes | bytearray) or len(data) != 33 or data[0] not in (2, 3):
            raise InvalidElement("P-256 element must be a 33-byte compressed SEC1 point")
        if int.from_bytes(data[1:], "big") >= self.p:
            raise InvalidElement("non-canonical x coordinate")
        try:
            nums = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(data)).public_numbers()
        except ValueError:
            raise InvalidElement("not a point on P-256") from None
        return EccPoint(nums.x, nums.y, "p256")


RISTRETTO255 = Ristretto255()
P256_GROUP = P256()
