"""X.509 identities for GridKey parties: verify a member certificate and get back who it names.

Adapters call :func:`verify_certificate` and put the result into the protocol's key directory
(``KeyDirectory.add(identity.member_id, identity.key, identity.role)``); the protocol core itself
never parses certificates. This module must not import ``gridkey.protocol`` so that the crypto
layer stays independent of it: the role names and the member-id pattern are therefore repeated
here, and a test checks that both copies agree.

Certificate profile (what :class:`gridkey.crypto.ca.LocalCA` issues and what is accepted):

* X.509 v3 with a positive serial number, issued directly by the configured CA (no
  intermediates); the CA certificate must carry BasicConstraints CA=true.
* Subject CN = the member id, matching ``[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}``.
* SubjectAlternativeName with exactly one URI ``urn:gridkey:<role>:<member_id>``, where role is
  one of ``meter``, ``controller``, ``gateway`` and member_id equals the CN. Other SAN entries
  are ignored.
* BasicConstraints CA=false (critical); KeyUsage digitalSignature only (critical), so a member
  certificate can never sign certificates or CRLs.
* SubjectKeyIdentifier; AuthorityKeyIdentifier (if it carries a key id, it must equal the CA's
  SubjectKeyIdentifier).
* Any other critical extension is rejected (RFC 5280 §4.2: unknown critical extensions must not
  be ignored).
* Leaf key: Ed25519 (suite GK1) or ECDSA P-256 (suite GK2).

The time of verification is an input (``now``), never read from the clock here, so that tests and
replays are deterministic and the caller decides which clock to trust.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from .signatures import VerifyKey, verify_key_from_cryptography

# Same as gridkey.protocol.messages.ID_RE (kept in sync by a test: crypto does not import protocol).
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
# The certificate roles. Only meters and controllers may hold a group key; the gateway signs as
# coordinator, an operator signs roster statements (the strict roster profile).
ROLES = ("meter", "controller", "gateway", "operator")
MEMBER_ROLES = frozenset({"meter", "controller"})
URN_PREFIX = "urn:gridkey:"

_E = TypeVar("_E", bound=x509.ExtensionType)

# Critical extensions this module understands and checks; any other critical one is rejected.
_HANDLED_CRITICAL = frozenset(
    {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.SUBJECT_ALTERNATIVE_NAME}
)
# Errors `cryptography` raises for malformed content that it parses lazily (extensions, keys).
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class CertificateError(ValueError):
    """A certificate or CRL failed verification; ``check`` names the check that failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(check, message)
        self.check = check
        self.message = message

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class Identity:
    """A verified member certificate: who (member id, role), which key, and when it is valid."""

    member_id: str
    role: str
    key: VerifyKey
    kid: bytes
    serial: int
    not_before: datetime
    not_after: datetime
    fingerprint: str  # hex SHA-256 of the certificate DER


def gridkey_uri(role: str, member_id: str) -> str:
    return f"{URN_PREFIX}{role}:{member_id}"


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(pem_or_der: bytes) -> x509.Certificate:
    """Parse a PEM or DER certificate; any malformed input raises :class:`CertificateError`."""
    if not isinstance(pem_or_der, bytes | bytearray | memoryview):
        raise TypeError("certificate must be bytes")
    data = bytes(pem_or_der)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except Exception as exc:  # any parser failure means "not a certificate"
        raise CertificateError("parse", f"not a valid PEM or DER certificate ({exc})") from None


def as_utc(now: datetime) -> datetime:
    """``now`` in UTC; naive datetimes are refused because their meaning depends on the host."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def verify_certificate(
    cert_pem_or_der: bytes,
    ca_cert: x509.Certificate,
    *,
    now: datetime,
    crl: x509.CertificateRevocationList | None = None,
) -> Identity:
    """Verify a member certificate against ``ca_cert`` (and ``crl``) at time ``now``.

    Raises :class:`CertificateError` for every kind of bad certificate or CRL, including
    malformed bytes, so callers need to handle exactly one exception type.
    """
    now = as_utc(now)
    cert = load_certificate(cert_pem_or_der)
    try:
        return _verify(cert, ca_cert, now, crl)
    except CertificateError:
        raise
    except _PARSE_ERRORS as exc:
        raise CertificateError("parse", f"malformed certificate or CRL content ({exc})") from None


def _verify(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    now: datetime,
    crl: x509.CertificateRevocationList | None,
) -> Identity:
    _check_trust_anchor(ca_cert)

    if cert.version != x509.Version.v3:
        raise CertificateError("version", "certificate must be X.509 v3")
    if cert.serial_number <= 0:  # RFC 5280 §4.1.2.2; newer `cryptography` refuses to parse these
        raise CertificateError("serial", "certificate serial number must be positive")
    if cert.issuer != ca_cert.subject:
        raise CertificateError("issuer", "certificate issuer does not match the CA subject")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise CertificateError("signature", f"certificate signature does not verify with the CA key{detail}") from None

    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(
            "validity",
            f"certificate valid from {cert.not_valid_before_utc.isoformat()} "
            f"to {cert.not_valid_after_utc.isoformat()}, not at {now.isoformat()}",
        )

    exts = cert.extensions
    for ext in exts:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            raise CertificateError("critical-extension", f"unsupported critical extension {ext.oid.dotted_string}")

    bc = _get_ext(exts, x509.BasicConstraints)
    if bc is None or bc.ca:
        raise CertificateError("basic-constraints", "member certificate must have BasicConstraints CA=false")
    ku = _get_ext(exts, x509.KeyUsage)
    if ku is None or not ku.digital_signature:
        raise CertificateError("key-usage", "member certificate must have KeyUsage digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        raise CertificateError("key-usage", "member certificate must not allow keyCertSign or cRLSign")

    aki = _get_ext(exts, x509.AuthorityKeyIdentifier)
    ca_ski = _get_ext(ca_cert.extensions, x509.SubjectKeyIdentifier)
    if (
        aki is not None
        and aki.key_identifier is not None
        and ca_ski is not None
        and aki.key_identifier != ca_ski.digest
    ):
        raise CertificateError("authority-key-id", "AuthorityKeyIdentifier does not match the CA key")

    member_id = _subject_member_id(cert)
    role = _san_role(exts, member_id)

    try:
        key = verify_key_from_cryptography(cert.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError("key", f"certificate key must be Ed25519 or ECDSA P-256 ({exc})") from None

    if crl is not None:
        _check_crl(crl, ca_cert, now, cert.serial_number)

    return Identity(
        member_id=member_id,
        role=role,
        key=key,
        kid=key.kid,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def _get_ext(exts: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return exts.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_trust_anchor(ca_cert: x509.Certificate) -> None:
    """A leaf passed as the CA by mistake would otherwise vouch for anything signed by its key."""
    bc = _get_ext(ca_cert.extensions, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise CertificateError("trust-anchor", "the CA certificate does not have BasicConstraints CA=true")
    ku = _get_ext(ca_cert.extensions, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise CertificateError("trust-anchor", "the CA certificate's KeyUsage does not allow keyCertSign")


def _subject_member_id(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CertificateError("subject", "subject must have exactly one CN")
    cn = cns[0].value
    if not isinstance(cn, str) or not ID_RE.fullmatch(cn):
        raise CertificateError("subject", f"subject CN must be a member id matching {ID_RE.pattern}")
    return cn


def _san_role(exts: x509.Extensions, member_id: str) -> str:
    san = _get_ext(exts, x509.SubjectAlternativeName)
    if san is None:
        raise CertificateError("san", "certificate has no SubjectAlternativeName")
    # Count case variants too, so a second "URN:GRIDKEY:..." cannot sit beside the canonical one.
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.lower().startswith(URN_PREFIX)]
    if len(uris) != 1:
        raise CertificateError("san", f"expected exactly one {URN_PREFIX}<role>:<member_id> URI, found {len(uris)}")
    uri = uris[0]
    role, sep, uri_member = uri[len(URN_PREFIX) :].partition(":")
    if not uri.startswith(URN_PREFIX) or not sep or role not in ROLES:
        raise CertificateError("san", f"SAN URI must be {URN_PREFIX}<role>:<member_id> with role in {ROLES}")
    if uri_member != member_id:
        raise CertificateError("san", "SAN URI member id does not match the subject CN")
    return role


@dataclass(frozen=True)
class Revocation:
    """A verified CRL, reduced to what a member checks: when it was issued, until when it may be
    used, its number, and the revoked serials. Times are unix milliseconds."""

    this_update: int
    next_update: int
    number: int
    revoked: frozenset[int] = frozenset()

    def usable(self, now: int, max_age_ms: int, skew_ms: int = 300_000) -> bool:
        """Not past nextUpdate, not older than ``max_age_ms``, not issued more than ``skew_ms`` ahead
        (the clock skew a member allows a Start, so a meter whose clock is behind is not refused)."""
        return self.this_update - skew_ms <= now <= self.next_update and now - self.this_update <= max_age_ms


def read_crl(data: bytes | x509.CertificateRevocationList, ca_cert: x509.Certificate, now: datetime) -> Revocation:
    """Verify a CRL (DER, PEM or parsed) issued by ``ca_cert`` and current at ``now``.

    Raises :class:`CertificateError` for anything a member must not rely on: bytes that are not a
    CRL, another issuer, a bad signature, no nextUpdate or past it, no CRL number, an unknown
    critical extension (a delta CRL read as complete would miss revocations).
    """
    now = as_utc(now)
    crl = data
    if not isinstance(crl, x509.CertificateRevocationList):
        try:
            raw = bytes(data)  # type: ignore[arg-type]
            crl = x509.load_pem_x509_crl(raw) if raw.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(raw)
        except Exception as exc:  # any parser failure means "not a CRL"
            raise CertificateError("crl-parse", f"not a valid CRL ({type(exc).__name__})") from None
    try:
        _check_crl(crl, ca_cert, now, None)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        revoked = frozenset(r.serial_number for r in crl)
        this_update = crl.last_update_utc
    except CertificateError:
        raise
    except x509.ExtensionNotFound:
        raise CertificateError("crl-number", "CRL has no CRL number, so a rollback cannot be told") from None
    except _PARSE_ERRORS as exc:
        raise CertificateError("crl-parse", f"malformed CRL content ({exc})") from None
    assert crl.next_update_utc is not None  # _check_crl refused a CRL without one
    return Revocation(
        this_update=int(this_update.timestamp() * 1000),
        next_update=int(crl.next_update_utc.timestamp() * 1000),
        number=number,
        revoked=revoked,
    )


def _check_crl(
    crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, now: datetime, serial: int | None
) -> None:
    if crl.issuer != ca_cert.subject:
        raise CertificateError("crl-issuer", "CRL issuer does not match the CA subject")
    ku = _get_ext(ca_cert.extensions, x509.KeyUsage)
    if ku is not None and not ku.crl_sign:
        raise CertificateError("crl-issuer", "the CA certificate's KeyUsage does not allow cRLSign")
    try:
        valid = crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CertificateError("crl-signature", "CRL signature does not verify with the CA key")
    next_update = crl.next_update_utc
    if next_update is None:
        raise CertificateError("crl-expired", "CRL has no nextUpdate, so its freshness cannot be judged")
    if now > next_update:
        raise CertificateError("crl-expired", f"CRL expired at {next_update.isoformat()}")
    for ext in crl.extensions:
        # e.g. a (critical) delta-CRL indicator: treating a delta CRL as complete would miss revocations
        if ext.critical:
            raise CertificateError("crl-extension", f"unsupported critical CRL extension {ext.oid.dotted_string}")
    if serial is not None and crl.get_revoked_certificate_by_serial_number(serial) is not None:
        raise CertificateError("revoked", f"certificate serial {serial:x} is revoked")
