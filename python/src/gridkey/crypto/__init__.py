"""Cryptographic building blocks: suites (group, signatures, KDF, AEAD), identities, a local CA."""

from .groups import Group, InvalidElement, InvalidScalar, Rng
from .rng import SeededRng, system_rng
from .signatures import SigningKey, VerifyKey
from .suite import GK1, GK2, SUITES, Suite, get_suite

__all__ = [
    "GK1",
    "GK2",
    "SUITES",
    "Group",
    "InvalidElement",
    "InvalidScalar",
    "Rng",
    "SeededRng",
    "SigningKey",
    "Suite",
    "VerifyKey",
    "get_suite",
    "system_rng",
]
