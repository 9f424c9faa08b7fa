"""A small local certificate authority for small deployments and tests.

It issues member certificates in the profile of :mod:`gridkey.crypto.identity`, keeps a list of
revoked serial numbers and signs CRLs. It signs the *public* key it is given: a member's private
key never passes through the CA (``issue_with_new_key`` is a convenience for tests and
provisioning scripts that generate the key locally anyway).

On disk (``save``/``load``) a CA is a directory with:

* ``ca-key.pem``  -- the CA private key, PKCS#8 PEM (encrypted if a password is given), mode 0600;
* ``ca-cert.pem`` -- the self-signed CA certificate;
* ``revoked.json`` -- ``[{"serial": "<hex>", "revoked_at": "<ISO 8601>", "reason": "keyCompromise"}]``.
  Serials are hex strings because they are up to 159 bits and many JSON readers lose precision
  on integers that large.

Time is an input (``now``) everywhere, as in the rest of GridKey. Serial numbers come from
``x509.random_serial_number()`` (OS randomness): they must be unpredictable, not reproducible.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from .groups import Rng
from .identity import (
    ID_RE,
    ROLES,
    as_utc,
    cert_to_pem,
    gridkey_uri,
    load_certificate,
)
from .rng import system_rng
from .signatures import SigningKey, VerifyKey, signing_key_from_cryptography
from .suite import GK2, Suite

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DEFAULT_CA_NAME",
    "REVOKED_FILE",
    "LocalCA",
    "Revocation",
    "cert_to_pem",
    "load_certificate",
]

DEFAULT_CA_NAME = "GridKey Local CA"
CA_KEY_FILE = "ca-key.pem"
CA_CERT_FILE = "ca-cert.pem"
REVOKED_FILE = "revoked.json"
CA_DAYS = 3650
MEMBER_DAYS = 825  # the CA/Browser Forum's former maximum; meters are re-provisioned rarely
CRL_DAYS = 7


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: datetime
    reason: str  # an x509.ReasonFlags value, e.g. "keyCompromise"


class LocalCA:
    """A CA key, its self-signed certificate and its revocation list."""

    def __init__(self, key: SigningKey, certificate: x509.Certificate, revocations: Iterable[Revocation] = ()) -> None:
        if key.public_key.spki_der != certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ValueError("CA key does not match the CA certificate")
        try:
            bc = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.ca:
            raise ValueError("CA certificate must have BasicConstraints CA=true")
        self._key = key
        self.certificate = certificate
        self._revoked: dict[int, Revocation] = {}
        for r in revocations:
            self._revoked.setdefault(r.serial, r)
        self._last_crl_number = 0

    # --- creation and storage -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str = DEFAULT_CA_NAME,
        *,
        now: datetime,
        rng: Rng | None = None,
        days: int = CA_DAYS,
        suite: Suite = GK2,
    ) -> LocalCA:
        """A new CA with a fresh key (ECDSA P-256 unless ``suite`` says otherwise)."""
        if days <= 0:
            raise ValueError("days must be positive")
        key = suite.generate_signing_key(rng or system_rng)
        start = _second(now)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = key.public_key.to_cryptography()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        return cls(key, _sign(builder, key))

    def save(self, directory: Path, *, password: bytes | None = None) -> None:
        """Write the CA to ``directory``; each file is replaced atomically, the key with mode 0600."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        key_pem = self._key.to_cryptography().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_atomic(directory / CA_KEY_FILE, key_pem, 0o600)
        _write_atomic(directory / CA_CERT_FILE, cert_to_pem(self.certificate), 0o644)
        revoked = [
            {"serial": format(r.serial, "x"), "revoked_at": r.revoked_at.isoformat(), "reason": r.reason}
            for r in self._revoked.values()
        ]
        _write_atomic(directory / REVOKED_FILE, (json.dumps(revoked, indent=2) + "\n").encode(), 0o644)

    @classmethod
    def load(cls, directory: Path, *, password: bytes | None = None) -> LocalCA:
        directory = Path(directory)
        key = signing_key_from_cryptography(
            serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), password)
        )
        cert = load_certificate((directory / CA_CERT_FILE).read_bytes())
        revocations: list[Revocation] = []
        revoked_path = directory / REVOKED_FILE
        if revoked_path.exists():
            for item in json.loads(revoked_path.read_text()):
                serial = item["serial"]
                revocations.append(
                    Revocation(
                        serial=int(serial, 16) if isinstance(serial, str) else int(serial),
                        revoked_at=as_utc(datetime.fromisoformat(item["revoked_at"])),
                        reason=x509.ReasonFlags(item["reason"]).value,
                    )
                )
        return cls(key, cert, revocations)

    # --- issuing ------------------------------------------------------------------------------

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject

    @property
    def public_key(self) -> VerifyKey:
        return self._key.public_key

    def issue(
        self, member_id: str, role: str, public_key: VerifyKey, *, now: datetime, days: int = MEMBER_DAYS
    ) -> x509.Certificate:
        """Certify ``public_key`` as ``member_id`` in ``role``; validity is clamped to the CA's own."""
        if not isinstance(member_id, str) or not ID_RE.fullmatch(member_id):
            raise ValueError(f"member id must match {ID_RE.pattern}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if not isinstance(public_key, VerifyKey):
            raise TypeError("public_key must be a gridkey VerifyKey (Ed25519 or ECDSA P-256)")
        if days <= 0:
            raise ValueError("days must be positive")
        start = self._check_ca_valid(now)
        end = min(start + timedelta(days=days), self.certificate.not_valid_after_utc)
        public = public_key.to_cryptography()
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(gridkey_uri(role, member_id))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        return _sign(builder, self._key)

    def issue_with_new_key(
        self,
        member_id: str,
        role: str,
        suite: Suite,
        *,
        now: datetime,
        rng: Rng | None = None,
        days: int = MEMBER_DAYS,
    ) -> tuple[SigningKey, x509.Certificate]:
        """Generate a member key for ``suite`` locally and certify it (tests, provisioning scripts)."""
        key = suite.generate_signing_key(rng or system_rng)
        return key, self.issue(member_id, role, key.public_key, now=now, days=days)

    # --- revocation ---------------------------------------------------------------------------

    def revoke(self, serial: int, *, now: datetime, reason: str = "keyCompromise") -> Revocation:
        """Mark ``serial`` revoked; revoking twice keeps the first record."""
        try:
            flag = x509.ReasonFlags(reason)
        except ValueError:
            raise ValueError(f"unknown revocation reason {reason!r}") from None
        if flag is x509.ReasonFlags.remove_from_crl:
            raise ValueError("removeFromCRL is only meaningful in delta CRLs")
        if not isinstance(serial, int) or serial <= 0:
            raise ValueError("serial must be a positive integer")
        return self._revoked.setdefault(serial, Revocation(serial, _second(now), flag.value))

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    @property
    def revocations(self) -> tuple[Revocation, ...]:
        return tuple(self._revoked.values())

    def crl(self, *, now: datetime, days: int = CRL_DAYS) -> x509.CertificateRevocationList:
        """A signed CRL valid from ``now`` for ``days``; verifiers reject it after nextUpdate."""
        if days <= 0:
            raise ValueError("days must be positive")
        start = self._check_ca_valid(now)
        # CRL numbers must increase (RFC 5280 §5.2.3); seconds since the epoch do across restarts.
        self._last_crl_number = max(self._last_crl_number + 1, int(start.timestamp()))
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(start)
            .next_update(start + timedelta(days=days))
            .add_extension(x509.CRLNumber(self._last_crl_number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        )
        for r in self._revoked.values():
            entry = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at)
            if r.reason != x509.ReasonFlags.unspecified.value:  # RFC 5280 §5.3.1: omit rather than 0
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags(r.reason)), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        priv = self._key.to_cryptography()
        return builder.sign(priv, None if isinstance(priv, ed25519.Ed25519PrivateKey) else hashes.SHA256())

    # --- internals ----------------------------------------------------------------------------

    def _check_ca_valid(self, now: datetime) -> datetime:
        start = _second(now)
        if not self.certificate.not_valid_before_utc <= start <= self.certificate.not_valid_after_utc:
            raise ValueError("the CA certificate is not valid at the given time")
        return start

    def __repr__(self) -> str:  # never print key material
        return f"<LocalCA {self.certificate.subject.rfc4514_string()} kid={self._key.kid.hex()}>"


def _second(now: datetime) -> datetime:
    """UTC, whole seconds: X.509 times have no fractions, so compare what is actually encoded."""
    return as_utc(now).replace(microsecond=0)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    priv = key.to_cryptography()
    # Ed25519 signs the message itself (PureEdDSA), so X.509 takes no separate hash algorithm.
    return builder.sign(priv, None if isinstance(priv, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file in the same directory so a crash never leaves a half-written key."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
