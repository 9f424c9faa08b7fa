"""`gridkey ca …`, `gridkey token issue`, `gridkey audit verify`: operator tools on a data dir."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..crypto.identity import ROLES, cert_to_pem
from ..datadir import DataDir
from ..store import Store
from .common import say


def ca(args: argparse.Namespace) -> int:
    data = DataDir(args.data)
    if args.ca_command == "init":
        made = data.init(suite=args.suite)
        say(f"{'created' if made else 'already present'}: {data.path} (CA cert: {data.ca_dir / 'ca-cert.pem'})")
        return 0
    if not data.exists():
        say(f"error: no CA in {data.path}; run `gridkey ca init --data {data.path}` first")
        return 2
    if args.ca_command == "issue":
        out = args.out or (data.path / "issued" / args.id)
        if args.role not in ROLES:
            say(f"error: --role must be one of {', '.join(ROLES)}")
            return 2
        _, cert = data.issue_identity(args.id, args.role, args.suite, out)
        say(f"issued {args.role} certificate for {args.id} (serial {cert.serial_number:x}) into {out}/")
        say(f"  key: {out / 'key.pem'} (mode 0600)   cert: {out / 'cert.pem'}")
        return 0
    local = data.local_ca()
    if args.ca_command == "revoke":
        serial = int(args.serial, 16)
        local.revoke(serial, now=datetime.now(UTC), reason=args.reason)
        local.save(data.ca_dir)
        say(f"revoked serial {args.serial}; meters enrolled with it should also be revoked via the API")
        return 0
    if args.ca_command == "list":
        for r in local.revocations:
            print(json.dumps({"serial": f"{r.serial:x}", "revoked_at": r.revoked_at.isoformat(), "reason": r.reason}))
        return 0
    if args.ca_command == "crl":
        crl = local.crl(now=datetime.now(UTC), days=args.days)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_bytes(crl.public_bytes(Encoding.DER))
        tmp.replace(args.out)  # the gateway re-reads it on change: never let it see half a file
        say(f"wrote a CRL of {len(local.revocations)} revocation(s), valid {args.days} days, to {args.out}")
        return 0
    if args.ca_command == "cert":
        sys.stdout.write(cert_to_pem(local.certificate).decode())
        return 0
    return 2


def roster(args: argparse.Namespace) -> int:
    """gridkey roster sign: a statement naming each certificate's member id and key."""
    import base64

    from ..crypto.identity import CertificateError, load_certificate
    from ..crypto.signatures import signing_key_from_pem, verify_key_from_cryptography
    from ..protocol.errors import DecodeError
    from ..protocol.messages import RosterEntry
    from ..protocol.roster import RosterStatement

    try:
        key = signing_key_from_pem(args.key.read_bytes())
        entries = {}
        for path in args.cert:
            cert = load_certificate(path.read_bytes())
            cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            entries[str(cn)] = RosterEntry(str(cn), verify_key_from_cryptography(cert.public_key()).kid)
        st = RosterStatement(args.group, args.version, tuple(entries[m] for m in sorted(entries)))
    except (OSError, ValueError, CertificateError, DecodeError, IndexError) as exc:
        say(f"error: {exc}")
        return 2
    print(json.dumps({"statement": base64.b64encode(st.sign(key)).decode()}))
    say(f"signed roster v{st.version} of {st.group_id}: {', '.join(entries)}")
    return 0


def token(args: argparse.Namespace) -> int:
    from ..transports.rest.auth import SCOPES, issue_token

    data = DataDir(args.data)
    if not (data.path / "tokens" / "signing-key.pem").exists():
        say(f"error: no token key in {data.path}; run `gridkey serve` or `gridkey ca init` once")
        return 2
    scopes = args.scope or list(SCOPES)
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        say(f"error: unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}")
        return 2
    print(
        issue_token(data.token_key().to_pem(), subject=args.subject, scopes=scopes, ttl_s=args.ttl, issuer=args.issuer)
    )
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    from ..gateway import audit

    store = Store(args.db or DataDir(args.data).db_url)
    with store.read() as conn:
        result = audit.verify(conn)
    store.dispose()
    print(json.dumps({"ok": result.ok, "entries": result.entries, "head": result.head, "problem": result.problem}))
    return 0 if result.ok else 1
