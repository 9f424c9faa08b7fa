"""The data directory of a sidecar with embedded defaults, created on first use.

    DIR/gridkey.db                 the SQLite store (unless --db points at PostgreSQL)
    DIR/ca/                        local CA: ca-key.pem (0600), ca-cert.pem, revoked.json
    DIR/gateway/key.pem, cert.pem  the coordinator's identity (role gateway)
    DIR/controller/key.pem, ...    the optional in-sidecar controller (role controller)
    DIR/tokens/signing-key.pem     ES256 key that `gridkey token issue` signs API tokens with

Small deployments run everything from here. Larger ones replace the local CA by their own PKI
(``--ca-cert``) and the token key by an OIDC provider's JWKS (``--jwks-url``); see
docs/operations.md. Private keys are written with mode 0600 and never logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .crypto.ca import LocalCA
from .crypto.identity import CertificateError, cert_to_pem, load_certificate, verify_certificate
from .crypto.signatures import P256SigningKey, SigningKey, signing_key_from_pem
from .crypto.suite import get_suite
from .gateway.trust import CoordinatorIdentity, Trust


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class DataDir:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.path / 'gridkey.db'}"

    @property
    def ca_dir(self) -> Path:
        return self.path / "ca"

    def exists(self) -> bool:
        return (self.ca_dir / "ca-cert.pem").exists() and (self.path / "gateway" / "cert.pem").exists()

    def init(
        self, *, suite: str = "GK1", gateway_id: str = "gateway", now: datetime | None = None, external_ca: bool = False
    ) -> bool:
        """Create the local CA, gateway identity and token key if missing. True if anything was made.

        With ``external_ca`` only the token key is made: the gateway identity must have been issued
        by that CA beforehand (``gridkey ca issue --role gateway --out DIR/gateway`` on the CA host).
        """
        now = now or datetime.now(UTC)
        self.path.mkdir(parents=True, exist_ok=True)
        made = False
        if external_ca:
            if not (self.path / "gateway" / "cert.pem").exists():
                raise ValueError(f"no gateway identity in {self.path / 'gateway'}: issue it at the CA first")
        elif not (self.ca_dir / "ca-cert.pem").exists():
            LocalCA.create(now=now).save(self.ca_dir)
            made = True
        if not (self.path / "gateway" / "cert.pem").exists():
            self.issue_identity(gateway_id, "gateway", suite, self.path / "gateway", now=now)
            made = True
        if not (self.path / "tokens" / "signing-key.pem").exists():
            key = P256SigningKey(ec.generate_private_key(ec.SECP256R1()))
            _write_private(self.path / "tokens" / "signing-key.pem", key.to_pem())
            made = True
        return made

    def local_ca(self) -> LocalCA:
        return LocalCA.load(self.ca_dir)

    def issue_identity(
        self,
        member_id: str,
        role: str,
        suite: str,
        directory: Path | None = None,
        *,
        now: datetime | None = None,
    ) -> tuple[SigningKey, x509.Certificate]:
        """Issue a key pair + certificate from the local CA (factory provisioning for small sites)."""
        ca = self.local_ca()
        key, cert = ca.issue_with_new_key(member_id, role, get_suite(suite), now=now or datetime.now(UTC))
        ca.save(self.ca_dir)
        if directory is not None:
            _write_private(directory / "key.pem", key.to_pem())
            (directory / "cert.pem").write_bytes(cert_to_pem(cert))
        return key, cert

    def load_identity(self, directory: Path) -> tuple[SigningKey, x509.Certificate]:
        key = signing_key_from_pem((directory / "key.pem").read_bytes())
        cert = load_certificate((directory / "cert.pem").read_bytes())
        return key, cert

    def controller(self, suite: str = "GK1", controller_id: str = "controller") -> tuple[SigningKey, x509.Certificate]:
        d = self.path / "controller"
        if not (d / "cert.pem").exists() and not (self.ca_dir / "ca-key.pem").exists():
            raise ValueError(f"no controller identity in {d}: with an external CA, issue it there first")
        if not (d / "cert.pem").exists():
            self.issue_identity(controller_id, "controller", suite, d)
        return self.load_identity(d)

    def trust(self, *, ca_cert_file: Path | None = None, crl_file: Path | None = None) -> Trust:
        """The local CA (lab default), or with ``ca_cert_file`` an external CA whose CRL file the
        gateway serves: then the data dir holds no CA key (see :mod:`gridkey.gateway.trust`)."""
        key, cert = self.load_identity(self.path / "gateway")
        gateway_id = str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        if ca_cert_file is None:
            ca = self.local_ca()
            return Trust(
                ca.certificate, CoordinatorIdentity(gateway_id, key, cert), local_ca=ca, local_ca_dir=self.ca_dir
            )
        if (self.ca_dir / "ca-key.pem").exists():
            raise ValueError(f"{self.ca_dir / 'ca-key.pem'} exists: an external CA's gateway keeps no CA key")
        ca_cert = load_certificate(Path(ca_cert_file).read_bytes())
        try:
            ident = verify_certificate(cert_to_pem(cert), ca_cert, now=datetime.now(UTC))
        except CertificateError as exc:
            raise ValueError(
                f"the gateway identity in {self.path / 'gateway'} is not one this CA issued: {exc}"
            ) from None
        if ident.role != "gateway":
            raise ValueError(f"{self.path / 'gateway' / 'cert.pem'} is a {ident.role} certificate, not a gateway's")
        return Trust(ca_cert, CoordinatorIdentity(gateway_id, key, cert), crl_file=crl_file)

    def ca_cert_pem(self) -> bytes:
        return (self.ca_dir / "ca-cert.pem").read_bytes()

    def token_key(self) -> SigningKey:
        return signing_key_from_pem((self.path / "tokens" / "signing-key.pem").read_bytes())
