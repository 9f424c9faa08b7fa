#!/usr/bin/env python3
"""Generate docs/test-vectors/bd-gk1.json and bd-gk2.json from fixed seeds.

Each vector is one full negotiation run through the real state machines (coordinator + members in
memory). It records everything an independent implementation needs to recompute the session:

    SH  = SHA-256(CBOR(["GridKey v1 sid", group, epoch, attempt, suite, mode, nonce, issued_at,
                        deadline, [[member id, kid]...]]));  sid = SH[:16]
    z_i = r_i·G,  X_i = r_i·(z_{i+1} − z_{i−1}),  K = Σ r_i·r_{i+1}·G
    H1  = SHA-256(CBOR(["GridKey v1 round1", SH, [z...]]))
    TH  = SHA-256(CBOR(["GridKey v1 transcript", SH, [z...], [X...]]))
    PRK = HKDF-Extract(TH, K);  each output = HKDF-Expand(PRK, "GridKey v1 " + label, length)
    tag = HMAC-SHA-256(confirm key, TH)[:16]
    exporter = HKDF-Expand(exporter secret, "GridKey v1 exporter " + CBOR([label, context, length]), length)

GK1 vectors up to n = 5 also carry the encoded COSE messages (Ed25519 signatures are deterministic); GK2's
ECDSA signatures are randomised, so only their values are recorded.

Usage: python scripts/gen_test_vectors.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gridkey.crypto import SeededRng, get_suite
from gridkey.protocol import bd
from gridkey.protocol.keyschedule import derive
from gridkey.protocol.loopback import Loopback

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "test-vectors"
SIZES = (2, 3, 5, 25)
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, fixed so the sid is reproducible
EXPORTER_LABEL = "GridKey test exporter"
EXPORTER_CONTEXT = b"context"


def vector(suite_name: str, n: int) -> dict:
    suite = get_suite(suite_name)
    group = suite.group
    seed = f"gridkey-test-vectors-{suite_name}-{n}"
    ids = sorted(f"meter-{i:02d}" for i in range(n))
    lb = Loopback(suite, ids, seed=seed)
    result = lb.run_epoch(now=NOW)
    if not result.agree:
        raise SystemExit(f"{suite_name} n={n}: members did not agree")
    # The members drew r_i as the first scalar of their own seeded stream (see Loopback).
    rs = [group.random_scalar(SeededRng(seed).fork(f"eph:{m}")) for m in ids]
    zs = [group.base_mult(r) for r in rs]
    xs = [bd.compute_x(group, rs[i], zs[i - 1], zs[(i + 1) % n], n) for i in range(n)]
    k = bd.expected_key(group, rs)
    keys = result.keys[ids[0]]
    session = lb.session
    start = session.start
    enc = group.encode
    derived = derive(suite, enc(k), session._th, group_id=start.group_id, epoch=start.epoch, sid=start.sid, roster=())
    out = {
        "n": n,
        "members": ids,
        "start": {
            "group_id": start.group_id,
            "epoch": start.epoch,
            "attempt": start.attempt,
            "suite": start.suite,
            "mode": int(start.mode),
            "nonce": start.nonce.hex(),
            "issued_at": start.issued_at,
            "deadline": start.deadline,
            "roster": [[e.member_id, e.kid.hex()] for e in start.roster],
        },
        "public_keys": [lb.identities[m].signing_key.public_key.spki_der.hex() for m in ids],  # SPKI DER
        "session_hash": session.session_hash.hex(),
        "sid": session.sid.hex(),
        "r": [group.scalar_encode(r).hex() for r in rs],
        "z": [enc(z).hex() for z in zs],
        "X": [(group.identity_encoding if x is None else enc(x)).hex() for x in xs],
        "K": enc(k).hex(),
        "round1_hash": session._h1.hex(),
        "transcript_hash": session._th.hex(),
        "key_schedule": {
            "aead_key": keys.aead_key.hex(),
            "aead_iv": keys.base_iv.hex(),
            "confirm_key": derived.confirm_key.hex(),
            "tag": derived.tag.hex(),
            "exporter": {
                "label": EXPORTER_LABEL,
                "context": EXPORTER_CONTEXT.hex(),
                "length": 16,
                "output": keys.exporter(suite, EXPORTER_LABEL, EXPORTER_CONTEXT, 16).hex(),
            },
        },
        "key_id": keys.key_id.hex(),
    }
    if suite_name == "GK1" and n <= 5:  # the n = 25 messages would only make the file long
        out["messages"] = {kind: data.hex() for kind, data in session.broadcasts.items()}
        out["messages"]["member"] = [e.raw.hex() for rnd in (1, 2, 3) for e in session._ordered(rnd)]
    return out


def generate(suite_name: str) -> dict:
    return {
        "suite": suite_name,
        "group": get_suite(suite_name).group.name,
        "notes": (
            "Scalars are encoded as the library encodes them (GK1 little-endian, GK2 big-endian); "
            "elements are canonical encodings (ristretto255 32 bytes, P-256 compressed SEC1). For n = 2, "
            "X is the identity (encoded as all zeros for GK1, 00 for GK2) and is not used."
        ),
        "vectors": [vector(suite_name, n) for n in SIZES],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in ("GK1", "GK2"):
        path = OUT / f"bd-{name.lower()}.json"
        text = json.dumps(generate(name), indent=2) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date", file=sys.stderr)
                status = 1
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
