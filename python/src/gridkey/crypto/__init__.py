"""Cryptographic building blocks: suites (group, signatures, KDF, AEAD), identities, a local CA."""

from .ca import LocalCA, Revocation
from .groups import Group, InvalidElement, InvalidScalar, Rng
from .identity import CertificateError, Identity, cert_to_pem, load_certificate, verify_certificate
from .rng import SeededRng, system_rng
from .signatures import SigningKey, VerifyKey
from .suite import GK1, GK2, SUITES, Suite, get_suite

__all__ = [
    "GK1",
    "GK2",
    "SUITES",
    "CertificateError",
    "Group",
    "Identity",
    "InvalidElement",
    "InvalidScalar",
    "LocalCA",
    "Revocation",
    "Rng",
    "SeededRng",
    "SigningKey",
    "Suite",
    "VerifyKey",
    "cert_to_pem",
    "get_suite",
    "load_certificate",
    "system_rng",
    "verify_certificate",
]
