#!/usr/bin/env python3
"""Generate docs/test-vectors/bd-gk1.json and bd-gk2.json from fixed seeds.

Each vector is one full negotiation run through the real state machines (coordinator + members in
memory). Besides the values the issue asks for it records the session id, because the transcript
hash covers it; with ``sid`` anyone can recompute everything:

    z_i = r_i·G,  X_i = r_i·(z_{i+1} − z_{i−1}),  K = Σ r_i·r_{i+1}·G
    TH  = SHA-256(CBOR(["GridKey v1 transcript", sid, [z...], [X...]]))
    key_id = HKDF-Expand(HKDF-Extract(TH, K), "GridKey v1 key id", 8)

Usage: python scripts/gen_test_vectors.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gridkey.crypto import SeededRng, get_suite
from gridkey.protocol import bd
from gridkey.protocol.loopback import Loopback

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "test-vectors"
SIZES = (2, 3, 5, 25)
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, fixed so the sid is reproducible


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
    enc = group.encode
    return {
        "n": n,
        "members": ids,
        "r": [group.scalar_encode(r).hex() for r in rs],
        "z": [enc(z).hex() for z in zs],
        "X": [(group.identity_encoding if x is None else enc(x)).hex() for x in xs],
        "K": enc(k).hex(),
        "sid": session.sid.hex(),
        "transcript_hash": session._th.hex(),
        "key_id": keys.key_id.hex(),
    }


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
