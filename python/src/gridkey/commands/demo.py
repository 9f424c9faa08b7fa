"""`gridkey demo` (= `make demo`): the main job, end to end, on embedded defaults.

Starts a sidecar (SQLite, local CA, an in-sidecar controller) and a fleet of meters as separate
processes talking CoAP over 127.0.0.1; forms a group through the REST API; waits for the group key;
lets the meters exchange encrypted readings; sends one group command; joins an 11th meter; revokes
one; sends a second command; checks that everyone who should hold each key does (and the revoked
meter does not), verifies the audit chain, and prints a summary. Exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..datadir import DataDir
from .common import say

GROUP = "feeder-7"
CONTROLLER = "controller"


class DemoFailure(Exception):
    pass


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise DemoFailure(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.keep = args.keep
        self.n = args.meters
        self.dir = Path(tempfile.mkdtemp(prefix="gridkey-demo-"))
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port(socket.SOCK_STREAM)
        self.procs: dict[str, subprocess.Popen] = {}
        self.http: httpx.Client | None = None
        self.timeline: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    # --- processes --------------------------------------------------------------------------

    def spawn(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        cmd = [sys.executable, "-m", "gridkey.cli", *argv]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def step(self, msg: str) -> None:
        self.timeline.append((msg, time.monotonic() - self.t0))
        say(f"[{time.monotonic() - self.t0:6.1f} s] {msg}")

    # --- API helpers ------------------------------------------------------------------------

    def api(self, method: str, path: str, **kw) -> Any:
        assert self.http is not None
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise DemoFailure(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
        return (
            r.json() if r.headers.get("content-type", "").startswith(("application/json", "application/problem")) else r
        )

    def fleet_status(self, name: str = "fleet") -> dict[str, dict]:
        path = self.dir / f"{name}.json"
        if not path.exists():
            return {}
        return {m["meter_id"]: m for m in json.loads(path.read_text())["meters"]}

    def all_status(self) -> dict[str, dict]:
        return {**self.fleet_status("fleet"), **self.fleet_status("meter-011")}

    def holders(self, epoch: int) -> dict[str, str]:
        return {
            mid: s["groups"][GROUP]["key_id"]
            for mid, s in self.all_status().items()
            if s["groups"].get(GROUP, {}).get("epoch") == epoch
        }

    # --- the story --------------------------------------------------------------------------

    def run(self) -> dict:
        coap = f"coap://127.0.0.1:{self.coap_port}"
        data = str(self.dir / "sidecar")
        self.step(f"starting sidecar (data dir {data}) with CoAP on {coap} and HTTP on :{self.http_port}")
        self.spawn(
            "sidecar",
            "serve",
            "--data",
            data,
            "--coap",
            f"127.0.0.1:{self.coap_port}",
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--controller",
            "--session-timeout-ms",
            "8000",
            "--ready-file",
            str(self.dir / "ready.json"),
            "--log-level",
            "info",
        )
        try:
            wait_until("the sidecar to start", lambda: (self.dir / "ready.json").exists(), timeout=60)
        except DemoFailure:
            raise DemoFailure("the sidecar did not start:\n" + self.tail("sidecar")) from None
        from ..transports.rest.auth import SCOPES, issue_token

        token = issue_token(
            DataDir(Path(data)).token_key().to_pem(),
            subject="demo",
            scopes=list(SCOPES),
            ttl_s=3600,
        )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}", headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        wait_until("the REST API", lambda: self.http.get("/healthz").status_code == 200)

        self.step(f"starting a fleet of {self.n} meters (one process, one UDP socket each)")
        self.spawn(
            "fleet",
            "fleet",
            "--data",
            data,
            "--count",
            str(self.n),
            "--server",
            coap,
            "--status-file",
            str(self.dir / "fleet.json"),
            "--reading-interval",
            "1",
            "--resync",
            "2",
        )
        ids = [f"meter-{i:03d}" for i in range(1, self.n + 1)]
        try:
            wait_until("the fleet to enrol", lambda: len(self.fleet_status()) == self.n, timeout=60)
            wait_until(
                "every meter to be enrolled",
                lambda: {m["meter_id"] for m in self.api("GET", "/v1/meters")} >= set(ids),
            )
        except DemoFailure:
            raise DemoFailure("the fleet did not start:\n" + self.tail("fleet")) from None

        self.step(f"creating group {GROUP} with {self.n} meters and the controller (end-to-end mode, GK1)")
        self.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*ids, CONTROLLER]})
        wait_until("epoch 1 on every meter", lambda: len(self.holders(1)) == self.n)
        key_ids = set(self.holders(1).values())
        if len(key_ids) != 1:
            raise DemoFailure(f"meters disagree on epoch 1: {key_ids}")
        self.step(f"epoch 1 committed: every meter holds key id {key_ids.pop()}")

        self.step("meters send encrypted readings for 2 s (the gateway relays ciphertext it cannot read)")
        time.sleep(2.5)

        cmd1 = {"action": "shed-load", "percent": 10, "reason": "demand response"}
        sent = self.api("POST", f"/v1/groups/{GROUP}/commands", json={"command": cmd1})
        self.step(f"controller sent a signed, group-encrypted command under epoch {sent['epoch']}")
        wait_until(
            "every meter to receive the command",
            lambda: all(s["commands_received"] >= 1 for s in self.fleet_status().values()),
        )

        self.step("meter-011 comes online and joins")
        self.spawn(
            "meter-011",
            "meter",
            "--data",
            data,
            "--id",
            "meter-011",
            "--server",
            coap,
            "--status-file",
            str(self.dir / "meter-011.json"),
            "--reading-interval",
            "1",
            "--resync",
            "2",
        )
        wait_until("meter-011 to enrol", lambda: self.http.get("/v1/meters/meter-011").status_code == 200)
        self.api("POST", f"/v1/groups/{GROUP}/members", json={"members": ["meter-011"]})
        wait_until("epoch 2 on all 11 meters", lambda: len(self.holders(2)) == self.n + 1)
        self.step(f"epoch 2 committed (join): {self.n + 1} meters hold key id {set(self.holders(2).values()).pop()}")

        victim = ids[2]
        self.step(f"revoking {victim} (e.g. a tamper alarm): automatic rekey without it")
        self.api("POST", f"/v1/meters/{victim}/revoke", json={"reason": "keyCompromise"})
        wait_until("epoch 3 on the remaining meters", lambda: len(self.holders(3)) == self.n)
        if victim in self.holders(3):
            raise DemoFailure(f"revoked {victim} holds the epoch-3 key")
        self.step(f"epoch 3 committed: {self.n} meters hold it, {victim} does not")

        cmd2 = {"action": "restore", "percent": 0}
        self.api("POST", f"/v1/groups/{GROUP}/commands", json={"command": cmd2})
        others = [m for m in ids if m != victim] + ["meter-011"]
        wait_until(
            "the remaining meters to receive the second command",
            lambda: all(self.all_status()[m]["commands_received"] >= (2 if m != "meter-011" else 1) for m in others),
        )
        time.sleep(1.0)
        if self.all_status()[victim]["commands_received"] != 1:
            raise DemoFailure(f"{victim} received a command after its revocation")
        self.step(f"second command delivered to {len(others)} meters; {victim} received nothing new")

        audit = self.api("GET", "/v1/audit/verify")
        if not audit["ok"]:
            raise DemoFailure(f"audit chain broken: {audit}")
        return self.summary(victim, audit)

    def summary(self, victim: str, audit: dict) -> dict:
        epochs = sorted(self.api("GET", f"/v1/groups/{GROUP}/epochs"), key=lambda e: e["epoch"])
        status = self.all_status()
        msg_max = max(s["round_msg_max"] for s in status.values())
        rounds = [s["round_msgs_sent"] for s in status.values() if s["round_msgs_sent"]]
        per_msg = sum(s["round_bytes_sent"] for s in status.values()) / max(1, sum(rounds))
        lines = ["", "GridKey demo summary", "=" * 78]
        lines.append(f"{'epoch':>5}  {'trigger':<12} {'members':>7}  {'key id':<16}  {'negotiation':>11}")
        for e in epochs:
            n, ms = len(e["members"]), e["duration_ms"]
            lines.append(f"{e['epoch']:>5}  {e['trigger']:<12} {n:>7}  {e['key_id']:<16}  {ms:>8} ms")
        lines.append("")
        lines.append(f"member round messages: max {msg_max} B, mean {per_msg:.0f} B (limit 200 B)")
        lines.append("")
        lines.append(f"{'meter':<11} {'epoch':>5} {'key id':<16} {'commands':>8} {'readings in':>11} {'sent':>5}")
        for mid in sorted(status):
            s = status[mid]
            g = s["groups"].get(GROUP, {})
            lines.append(
                f"{mid:<11} {g.get('epoch', 0):>5} {g.get('key_id') or '-':<16} {s['commands_received']:>8} "
                f"{s['readings_received']:>11} {s['readings_sent']:>5}" + ("   revoked" if mid == victim else "")
            )
        lines.append("")
        lines.append(f"audit chain: {audit['entries']} entries, verified (head {audit['head'][:16]}…)")
        say("\n".join(lines))
        return {"epochs": epochs, "meters": status, "audit": audit, "member_msg_max": msg_max}

    def close(self) -> None:
        if self.keep:
            say("")
            say("--keep: leaving the sidecar and meters running")
            info = json.loads((self.dir / "ready.json").read_text())
            for k, v in info.items():
                if v:
                    say(f"  {k:<10} {v}")
            say(f"  logs       {self.dir}/*.log")
            pids = " ".join(str(p.pid) for p in self.procs.values())
            say(f"  stop with: kill {pids}")
            return
        for name in list(self.procs):
            self.stop(name)
        if self.http is not None:
            self.http.close()


def run(args: argparse.Namespace) -> int:
    demo = Demo(args)
    try:
        demo.run()
        say("\ndemo passed")
        return 0
    except DemoFailure as exc:
        say(f"\ndemo FAILED: {exc}\n(logs in {demo.dir})")
        demo.keep = False
        return 1
    except KeyboardInterrupt:
        demo.keep = False
        return 130
    finally:
        demo.close()
