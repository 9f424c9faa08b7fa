#!/usr/bin/env python3
"""Time an operator's rekey through Eclipse Leshan: from ``POST /api/clients/<ep>/33001/<i>/10``
(Execute *Rekey*, what the web UI's EXE button sends) to every member of the group holding the new epoch.

    .venv/bin/python scripts/bench_leshan_rekey.py [--meters 5] [--rekeys 10] [--json]

Starts a real Leshan demo server (cached jar, ``scripts/leshan.py fetch``), a sidecar registered there
with ``--lwm2m-server`` and a fleet of meters over CoAP on 127.0.0.1 - the same processes the LwM2M
tests use, whose helpers (``tests/helpers.py``) this script reuses rather than copying them. Prints a
table on stderr and, with ``--json``, one JSON object on stdout: ``{"leshan_version", "meters",
"rekeys", "latency_ms": [...], "latency_ms_median", "latency_ms_p95"}``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

import leshan  # noqa: E402  (scripts/leshan.py)

from gridkey.bench.e2e import p95  # noqa: E402
from helpers import FleetRunner, SidecarProc, wait_for  # noqa: E402  (tests/helpers.py)

GROUP = "bench-lwm2m"


def run(meters: int, rekeys: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gridkey-bench-leshan-"))
    ids = [f"lb-{i}" for i in range(1, meters + 1)]
    srv = leshan.LeshanServer(leshan.fetch(), models=ROOT / "lwm2m-objects", workdir=work / "leshan").start()
    sc = fleet = None
    try:
        sc = SidecarProc(work / "sc", extra_args=("--lwm2m-server", srv.coap_url)).start()
        fleet = FleetRunner(sc, ids).start()
        version = f"{srv.release.artifact} {srv.release.version}"
        print(f"group of {meters} meters, Leshan {version} on {srv.web_url}", file=sys.stderr)
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": ids})
        fleet.wait_epoch(GROUP, 1, ids)
        wait_for("every meter registered", lambda: {c["endpoint"] for c in srv.api("clients")} >= set(ids), 30)
        latencies = []
        for k in range(rekeys):
            epoch = sc.group(GROUP)["epoch"]
            t0 = time.monotonic()
            r = srv.api(f"clients/{ids[0]}/33001/0/10?timeout=10", method="POST")
            if not r.get("success"):
                raise SystemExit(f"Leshan's execute failed: {r}")
            fleet.wait_epoch(GROUP, epoch + 1, ids, timeout=60)
            latencies.append(round((time.monotonic() - t0) * 1000, 1))
            print(f"  rekey {k + 1}/{rekeys}: {latencies[-1]} ms", file=sys.stderr)
            time.sleep(0.3)  # let the previous epoch's notifications settle
        return {
            "leshan_version": version,
            "meters": meters,
            "rekeys": rekeys,
            "latency_ms": latencies,
            "latency_ms_median": round(statistics.median(latencies), 1),
            "latency_ms_p95": p95(latencies),
        }
    finally:
        if fleet is not None:
            fleet.stop()
        if sc is not None:
            sc.stop()
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=5, help="group size (default 5)")
    ap.add_argument("--rekeys", type=int, default=10, help="timed rekeys (default 10)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.meters < 2 or args.rekeys < 1:
        ap.error("need --meters >= 2 and --rekeys >= 1")
    result = run(args.meters, args.rekeys)
    print(f"\n{'meters':>6} {'rekeys':>6} {'median ms':>10} {'p95 ms':>8}", file=sys.stderr)
    print(
        f"{result['meters']:>6} {result['rekeys']:>6} {result['latency_ms_median']:>10} {result['latency_ms_p95']:>8}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
