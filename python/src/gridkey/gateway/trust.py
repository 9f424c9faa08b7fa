"""What the gateway trusts: the CA, its own coordinator identity, and the revocation list.

With the embedded defaults the CA is a local one in the data dir (``LocalCA``), so revoking a meter
also revokes its certificate. That is the lab layout: whoever holds the gateway host holds the CA
key and can mint member identities. In the production layout (``gridkey serve --ca-cert --crl``)
the CA runs elsewhere; ``ca_cert`` is the anchor, and the gateway serves (and re-reads) the CRL file
the CA publishes: it relays revocation, it cannot make or unmake it. Revocations made through the
API are then recorded in the store and must also be made at the CA.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..crypto.ca import LocalCA
from ..crypto.identity import CertificateError, Identity, cert_to_pem, load_certificate, read_crl, verify_certificate
from ..crypto.signatures import SigningKey
from .errors import Forbidden, Invalid

log = logging.getLogger(__name__)


def _der(data: bytes) -> bytes:
    """A CRL file may be PEM or DER."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data).public_bytes(Encoding.DER)
    return data


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
        crl_file: Path | None = None,
    ) -> None:
        self.ca_cert = ca_cert
        self.coordinator = coordinator
        self._local_ca = local_ca
        self._local_ca_dir = local_ca_dir
        self._crl_file = crl_file
        self._crl_cache: tuple[tuple[int, int, int], x509.CertificateRevocationList | None] | None = None
        # serials any verified CA CRL revoked: kept if the file later goes missing or stale, so a
        # withheld CRL never brings a revoked meter back into this gateway's rosters
        self._revoked_seen: set[int] = set()
        self._lock = threading.Lock()

    @property
    def holds_ca_key(self) -> bool:
        return self._local_ca is not None

    @property
    def ca_pem(self) -> bytes:
        return cert_to_pem(self.ca_cert)

    def crl(self, now_ms: int) -> x509.CertificateRevocationList | None:
        if self._local_ca is not None:
            with self._lock:
                return self._local_ca.crl(now=ms_to_dt(now_ms))
        if self._crl_file is not None:
            return self._file_crl(now_ms)
        return None

    def _file_crl(self, now_ms: int) -> x509.CertificateRevocationList | None:
        """The CA's CRL file, re-read when it changes. One that does not verify or is out of date
        is not served (members then refuse end-to-end Starts: revocation fails closed)."""
        try:
            st = self._crl_file.stat()  # type: ignore[union-attr]
        except OSError:
            return None
        mtime = (st.st_mtime_ns, st.st_ino, st.st_size)
        with self._lock:
            if self._crl_cache is None or self._crl_cache[0] != mtime:
                try:
                    crl = x509.load_der_x509_crl(_der(self._crl_file.read_bytes()))  # type: ignore[union-attr]
                except (OSError, ValueError) as exc:
                    log.warning("CRL file %s is not a CRL (%s): not serving one", self._crl_file, exc)
                    crl = None
                self._crl_cache = (mtime, crl)
            crl = self._crl_cache[1]
        if crl is None:
            return None
        try:
            rev = read_crl(crl, self.ca_cert, ms_to_dt(now_ms))
        except CertificateError as exc:
            log.warning("CRL file %s not served: %s", self._crl_file, exc)
            return None
        with self._lock:
            self._revoked_seen |= rev.revoked
        return crl

    def verify(self, cert: bytes, now_ms: int) -> Identity:
        """A meter or controller certificate, checked against the CA (and its CRL when local)."""
        try:
            ident = verify_certificate(cert, self.ca_cert, now=ms_to_dt(now_ms), crl=self.crl(now_ms))
        except CertificateError as exc:
            if exc.check == "revoked":
                raise Forbidden(f"certificate is revoked ({exc.message})") from None
            raise Invalid(f"certificate rejected: {exc}") from None
        with self._lock:
            if ident.serial in self._revoked_seen:
                raise Forbidden(f"certificate serial {ident.serial:x} was revoked by an earlier CA CRL")
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
