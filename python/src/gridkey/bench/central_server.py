"""Centralized key transport over CoAP: the baseline server for `gridkey bench e2e`.

Same transport as the sidecar (aiocoap on 127.0.0.1), same message framing (the bench baselines'
COSE_Sign1 KeyTransport and Confirm), and each completed epoch is committed to SQLite like the
sidecar commits its epochs, so the comparison is about the protocols rather than the plumbing.

    POST /kt/rekey            start an epoch: a fresh key, HPKE-encrypted to every member
    GET  /kt/m/{idx} (Observe) member idx's KeyTransport message for the current epoch
    POST /kt/confirm          a member's signed Confirm

Members and server are provisioned from the same seed (``setup_centralized``), standing in for
the static KEM keys a real deployment would register beforehand. Bench only; never a product path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code

from .baselines import setup_centralized


class MemberResource(resource.ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.message = b""

    async def render_get(self, request):
        return aiocoap.Message(code=Code.CONTENT, payload=self.message)


class KeyServer:
    def __init__(self, suite: str, n: int, seed: int, db: Path) -> None:
        self.server, _ = setup_centralized(suite, n, seed=seed)
        self.members = [MemberResource() for _ in range(n)]
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS epochs (epoch INTEGER PRIMARY KEY, key_id BLOB, committed_at INT)")
        self.done = True

    def site(self) -> resource.Site:
        site = resource.Site()
        outer = self

        class Rekey(resource.Resource):
            async def render_post(self, request):
                for res, msg in zip(outer.members, outer.server.distribute(), strict=True):
                    res.message = msg
                    res.updated_state()
                outer.done = False
                return aiocoap.Message(code=Code.CHANGED)

        class Confirm(resource.Resource):
            async def render_post(self, request):
                if not outer.server.receive_confirm(request.payload):
                    return aiocoap.Message(code=Code.BAD_REQUEST, payload=b"confirm rejected")
                if not outer.done and len(outer.server.confirmed) == len(outer.members):
                    outer.done = True
                    outer.db.execute(
                        "INSERT INTO epochs VALUES (?, ?, ?)",
                        (outer.server.epoch, outer.server.key_id, int(time.time() * 1000)),
                    )
                return aiocoap.Message(code=Code.CHANGED)

        site.add_resource(["kt", "rekey"], Rekey())
        site.add_resource(["kt", "confirm"], Confirm())
        for i, res in enumerate(self.members):
            site.add_resource(["kt", "m", str(i)], res)
        return site


async def main(args: argparse.Namespace) -> None:
    ks = KeyServer(args.suite, args.n, args.seed, args.db)
    await aiocoap.Context.create_server_context(ks.site(), bind=("127.0.0.1", args.port), transports=["udp6"])
    if args.ready_file:
        args.ready_file.write_text(json.dumps({"port": args.port}))
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="centralized key-transport baseline server (bench only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--suite", default="GK1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--ready-file", type=Path)
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)
