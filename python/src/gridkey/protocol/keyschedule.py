"""Session ids, transcript hashes and the key schedule.

Every hash input is a deterministic CBOR array that starts with a label, so any CBOR library can
recompute it. Hashes cover protocol *values* (roster, z, X), never signatures: ECDSA signatures are
randomised and malleable, and the transcript must be the same for every member.

    SH   = SHA-256(["GridKey v1 sid", group, epoch, attempt, suite, mode, nonce, issued_at,
                    deadline, roster])                       the session hash, all 32 bytes
    sid  = SH[:16]                                           a label on the wire, for lookups only
    Round1 signatures take external_aad = SH; H1 and TH hash SH, so every member signature and
    the key schedule bind the whole hash (a 16-byte sid with a coordinator-chosen nonce was open to
    a 2^64 search for two rosters under one sid).
    H1   = SHA-256(["GridKey v1 round1", SH, [z_1..z_n]])
    TH   = SHA-256(["GridKey v1 transcript", SH, [z_1..z_n], [X_1..X_n]])
    PRK  = HKDF-Extract(salt = TH, IKM = encode(K))
    aead key (16) | base IV (12) | confirm key (32) | key id (8) | exporter secret (32)
         = HKDF-Expand(PRK, "GridKey v1 " + label, length)
    tag  = HMAC-SHA-256(confirm key, TH)[:16]
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ..crypto.suite import AEAD_KEY_LEN, AEAD_NONCE_LEN, Suite
from . import cbor
from .messages import KEY_ID_LEN, SID_LEN, TAG_LEN, RosterEntry

LABEL_PREFIX = b"GridKey v1 "


def session_hash(
    suite: Suite,
    group_id: str,
    epoch: int,
    attempt: int,
    mode: int,
    nonce: bytes,
    issued_at: int,
    deadline: int,
    roster: tuple[RosterEntry, ...],
) -> bytes:
    data = cbor.dumps(
        [
            "GridKey v1 sid",
            group_id,
            epoch,
            attempt,
            suite.name,
            int(mode),
            nonce,
            issued_at,
            deadline,
            [[e.member_id, e.kid] for e in roster],
        ]
    )
    return suite.hash(data)


def sid_of(sh: bytes) -> bytes:
    """The wire label of a session hash."""
    return sh[:SID_LEN]


def round1_hash(suite: Suite, sh: bytes, zs: list[bytes]) -> bytes:
    return suite.hash(cbor.dumps(["GridKey v1 round1", sh, zs]))


def transcript_hash(suite: Suite, sh: bytes, zs: list[bytes], xs: list[bytes]) -> bytes:
    return suite.hash(cbor.dumps(["GridKey v1 transcript", sh, zs, xs]))


def _expand(suite: Suite, prk: bytes, label: str, length: int) -> bytes:
    return suite.hkdf_expand(prk, LABEL_PREFIX + label.encode(), length)


@dataclass(frozen=True, repr=False)
class EpochKeys:
    """What a member holds for one committed epoch. Never serialised onto the wire or into a log."""

    group_id: str
    epoch: int
    sid: bytes
    key_id: bytes  # public: safe for dashboards, LwM2M, clouds
    aead_key: bytes
    base_iv: bytes
    exporter_secret: bytes
    roster: tuple[RosterEntry, ...] = field(default=())

    def exporter(self, suite: Suite, label: str, context: bytes, length: int) -> bytes:
        """Derive an application secret (e.g. a Group OSCORE master secret) for this epoch."""
        info = cbor.dumps([label, context, length])
        return suite.hkdf_expand(self.exporter_secret, LABEL_PREFIX + b"exporter " + info, length)

    def __repr__(self) -> str:  # never print key material
        return f"EpochKeys(group={self.group_id!r}, epoch={self.epoch}, key_id={self.key_id.hex()})"


@dataclass(frozen=True, repr=False)
class Derived:
    keys: EpochKeys
    confirm_key: bytes
    tag: bytes


def derive(
    suite: Suite,
    k_encoded: bytes,
    th: bytes,
    *,
    group_id: str,
    epoch: int,
    sid: bytes,
    roster: tuple[RosterEntry, ...],
) -> Derived:
    prk = suite.hkdf_extract(th, k_encoded)
    confirm_key = _expand(suite, prk, "confirm", 32)
    keys = EpochKeys(
        group_id=group_id,
        epoch=epoch,
        sid=sid,
        key_id=_expand(suite, prk, "key id", KEY_ID_LEN),
        aead_key=_expand(suite, prk, "aead key", AEAD_KEY_LEN),
        base_iv=_expand(suite, prk, "aead iv", AEAD_NONCE_LEN),
        exporter_secret=_expand(suite, prk, "exporter", 32),
        roster=roster,
    )
    return Derived(keys, confirm_key, confirm_tag(suite, confirm_key, th))


def confirm_tag(suite: Suite, confirm_key: bytes, th: bytes) -> bytes:
    return suite.mac(confirm_key, th)[:TAG_LEN]


def tags_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
