"""Cipher suites: one small interface over group, signatures, KDF and AEAD.

=====  ==============  ================  =============  ===========
suite  group           signatures        KDF            AEAD
=====  ==============  ================  =============  ===========
GK1    ristretto255    Ed25519           HKDF-SHA-256   AES-128-GCM
GK2    P-256           ECDSA P-256       HKDF-SHA-256   AES-128-GCM
=====  ==============  ================  =============  ===========

GK2 matches DLMS/COSEM security suite 1 and the secure elements most metering hardware carries.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .groups import P256_GROUP, RISTRETTO255, Group, Rng
from .signatures import (
    COSE_ALG_EDDSA,
    COSE_ALG_ES256,
    Ed25519SigningKey,
    P256SigningKey,
    SigningKey,
    VerifyKey,
)

AEAD_KEY_LEN = 16
AEAD_NONCE_LEN = 12
AEAD_TAG_LEN = 16
HASH_LEN = 32


@dataclass(frozen=True)
class Suite:
    name: str
    group: Group
    signature_scheme: str
    cose_alg: int
    _keygen: type[SigningKey]

    def generate_signing_key(self, rng: Rng) -> SigningKey:
        return self._keygen.generate(rng)  # type: ignore[attr-defined]

    def accepts_key(self, key: VerifyKey) -> bool:
        return key.cose_alg == self.cose_alg

    # KDF and AEAD are the same in both suites today; they live here so a future suite can differ.
    @staticmethod
    def hash(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    @staticmethod
    def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
        # RFC 5869 §2.2 is a single HMAC; `cryptography` only exposes extract+expand together.
        return hmac.new(salt, ikm, hashlib.sha256).digest()

    @staticmethod
    def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
        return HKDFExpand(hashes.SHA256(), length, info).derive(prk)

    @staticmethod
    def mac(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()

    @staticmethod
    def aead(key: bytes) -> AESGCM:
        if len(key) != AEAD_KEY_LEN:
            raise ValueError("AES-128-GCM key must be 16 bytes")
        return AESGCM(key)


GK1 = Suite("GK1", RISTRETTO255, "Ed25519", COSE_ALG_EDDSA, Ed25519SigningKey)
GK2 = Suite("GK2", P256_GROUP, "ECDSA-P256", COSE_ALG_ES256, P256SigningKey)
SUITES: dict[str, Suite] = {s.name: s for s in (GK1, GK2)}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}") from None
