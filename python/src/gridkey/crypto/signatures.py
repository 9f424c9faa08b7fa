"""Signature schemes: Ed25519 (GK1) and ECDSA P-256 (GK2), with COSE algorithm ids and short kids.

Ed25519 runs on libsodium (PyNaCl): it verifies about twice as fast as OpenSSL's Ed25519 here, and
in end-to-end mode a member verifies n-1 signatures per negotiation. ECDSA runs on OpenSSL via
``cryptography``; COSE carries ECDSA signatures as fixed-size r||s (RFC 9053 §2.1), not DER.
ECDSA signatures are low-S (s <= n/2, as in BIP 62 and libsecp256k1): signers normalise, verifiers
refuse high-S, so a signature cannot be turned into a second valid one for the same message.

A key id (``kid``) is the first 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo, so it is
the same whichever library or certificate carries the key.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from functools import cached_property

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from nacl.bindings import crypto_sign_open

from .groups import Rng

KID_LEN = 8
COSE_ALG_EDDSA = -8
COSE_ALG_ES256 = -7
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_HALF_ORDER = _P256_ORDER // 2


def kid_for_spki(spki_der: bytes) -> bytes:
    return hashlib.sha256(spki_der).digest()[:KID_LEN]


class VerifyKey(ABC):
    """A public signing key as the protocol needs it: verify, kid, and its SPKI encoding."""

    cose_alg: int
    scheme: str

    @abstractmethod
    def verify(self, signature: bytes, data: bytes) -> bool:
        """True iff ``signature`` is valid over ``data``; never raises on bad input."""

    @abstractmethod
    def to_cryptography(self) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey: ...

    @cached_property
    def spki_der(self) -> bytes:
        return self.to_cryptography().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @cached_property
    def kid(self) -> bytes:
        return kid_for_spki(self.spki_der)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self.spki_der == other.spki_der

    def __hash__(self) -> int:
        return hash(self.spki_der)


class SigningKey(ABC):
    scheme: str

    @property
    @abstractmethod
    def public_key(self) -> VerifyKey: ...

    @abstractmethod
    def sign(self, data: bytes) -> bytes: ...

    @abstractmethod
    def to_cryptography(self) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey: ...

    @property
    def kid(self) -> bytes:
        return self.public_key.kid

    def to_pem(self) -> bytes:
        return self.to_cryptography().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:  # never print key material
        return f"<{type(self).__name__} kid={self.kid.hex()}>"


# --- Ed25519 ----------------------------------------------------------------------------------


class Ed25519VerifyKey(VerifyKey):
    cose_alg = COSE_ALG_EDDSA
    scheme = "Ed25519"

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ValueError("Ed25519 public key must be 32 bytes")
        self.raw = bytes(raw)
        nacl.signing.VerifyKey(self.raw)  # validates the encoding once

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            # The raw binding skips PyNaCl's wrapper objects: about 10% faster per check.
            crypto_sign_open(signature + data, self.raw)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    def to_cryptography(self) -> ed25519.Ed25519PublicKey:
        return ed25519.Ed25519PublicKey.from_public_bytes(self.raw)


class Ed25519SigningKey(SigningKey):
    scheme = "Ed25519"

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        self._sk = nacl.signing.SigningKey(bytes(seed))
        self._pub = Ed25519VerifyKey(bytes(self._sk.verify_key))

    @classmethod
    def generate(cls, rng: Rng) -> Ed25519SigningKey:
        return cls(rng(32))

    @property
    def public_key(self) -> Ed25519VerifyKey:
        return self._pub

    def sign(self, data: bytes) -> bytes:
        return self._sk.sign(data).signature

    def to_cryptography(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(self._sk))


# --- ECDSA P-256 ------------------------------------------------------------------------------


class P256VerifyKey(VerifyKey):
    cose_alg = COSE_ALG_ES256
    scheme = "ECDSA-P256"

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ECDSA key must be on P-256")
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s <= _P256_HALF_ORDER):
            return False  # low-S only: (r, n - s) would be a second valid signature on the same data
        try:
            self._key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def to_cryptography(self) -> ec.EllipticCurvePublicKey:
        return self._key


class P256SigningKey(SigningKey):
    scheme = "ECDSA-P256"

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ECDSA key must be on P-256")
        self._key = key
        self._pub = P256VerifyKey(key.public_key())

    @classmethod
    def generate(cls, rng: Rng) -> P256SigningKey:
        d = int.from_bytes(rng(48), "big") % (_P256_ORDER - 1) + 1
        return cls(ec.derive_private_key(d, ec.SECP256R1()))

    @property
    def public_key(self) -> P256VerifyKey:
        return self._pub

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        s = min(s, _P256_ORDER - s)  # normalise to low-S, the only form verify() accepts
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def to_cryptography(self) -> ec.EllipticCurvePrivateKey:
        return self._key


# --- conversions from `cryptography` objects (X.509, PEM files) -------------------------------


def verify_key_from_cryptography(key: object) -> VerifyKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return Ed25519VerifyKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return P256VerifyKey(key)
    raise ValueError(f"unsupported public key type {type(key).__name__}")


def signing_key_from_cryptography(key: object) -> SigningKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return Ed25519SigningKey(raw)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return P256SigningKey(key)
    raise ValueError(f"unsupported private key type {type(key).__name__}")


def signing_key_from_pem(pem: bytes, password: bytes | None = None) -> SigningKey:
    return signing_key_from_cryptography(serialization.load_pem_private_key(pem, password))


def verify_key_from_spki(der: bytes) -> VerifyKey:
    return verify_key_from_cryptography(serialization.load_der_public_key(der))
