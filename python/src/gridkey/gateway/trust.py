"""What the gateway trusts: the CA, its own coordinator identity, and the revocation list.

With the embedded defaults the CA is a local one in the data dir (``LocalCA``), so revoking a meter
also revokes its certificate. With an external CA, ``ca_cert`` is the anchor and revocations are
recorded in the store (and should also be made at the CA).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from ..crypto.ca import LocalCA
from ..crypto.identity import CertificateError, Identity, cert_to_pem, load_certificate, verify_certificate
from ..crypto.signatures import SigningKey
from .errors import Forbidden, Invalid


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True)
class CoordinatorIdentity:
    """The gateway's signing key and certificate (role ``gateway``); members verify its messages."""

    gateway_id: str
    signing_key: SigningKey
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.certificate)


class Trust:
    def __init__(
        self,
        ca_cert: x509.Certificate,
        coordinator: CoordinatorIdentity,
        *,
        local_ca: LocalCA | None = None,
        local_ca_dir: Path | None = None,
    ) -> None:
        self.ca_cert = ca_cert
        self.coordinator = coordinator
        self._local_ca = local_ca
        self._local_ca_dir = local_ca_dir
        self._lock = threading.Lock()

    @property
    def ca_pem(self) -> bytes:
        return cert_to_pem(self.ca_cert)

    def crl(self, now_ms: int) -> x509.CertificateRevocationList | None:
        if self._local_ca is None:
            return None
        with self._lock:
            return self._local_ca.crl(now=ms_to_dt(now_ms))

    def verify(self, cert: bytes, now_ms: int) -> Identity:
        """A meter or controller certificate, checked against the CA (and its CRL when local)."""
        try:
            ident = verify_certificate(cert, self.ca_cert, now=ms_to_dt(now_ms), crl=self.crl(now_ms))
        except CertificateError as exc:
            if exc.check == "revoked":
                raise Forbidden(f"certificate is revoked ({exc.message})") from None
            raise Invalid(f"certificate rejected: {exc}") from None
        return ident

    def is_revoked(self, serial: int) -> bool:
        with self._lock:
            return self._local_ca is not None and self._local_ca.is_revoked(serial)

    def revoke(self, serial: int, now_ms: int, reason: str) -> bool:
        """Add a serial to the local CA's revocation list; True if it was not there yet.

        Replicas share the data dir: merge what another replica wrote before saving, so that two
        replicas revoking different meters never overwrite each other's entries.
        """
        if self._local_ca is None:
            return False
        with self._lock:
            if self._local_ca_dir is not None:
                on_disk = LocalCA.load(self._local_ca_dir)
                for r in on_disk.revocations:
                    if not self._local_ca.is_revoked(r.serial):
                        self._local_ca.revoke(r.serial, now=r.revoked_at, reason=r.reason)
            if self._local_ca.is_revoked(serial):
                return False
            self._local_ca.revoke(serial, now=ms_to_dt(now_ms), reason=reason)
            if self._local_ca_dir is not None:
                self._local_ca.save(self._local_ca_dir)
            return True


def parse_cert(data: bytes) -> x509.Certificate:
    try:
        return load_certificate(data)
    except CertificateError as exc:
        raise Invalid(f"not a certificate: {exc}") from None
