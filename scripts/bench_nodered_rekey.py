#!/usr/bin/env python3
"""Time ``gridkey rekey`` in a real Node-RED: from a message entering the node to its output, which
the node sends once the new epoch is committed (every member confirmed the same key).

    .venv/bin/python scripts/bench_nodered_rekey.py [--meters 10] [--rekeys 10] [--runtime 4|5|both] [--json]

Starts a sidecar process, a fleet of meters over CoAP on 127.0.0.1 (``tests/helpers.py``) and a
``node-red`` process with the packed package (``scripts/nodered.py``), deploys inject -> gridkey
rekey -> debug, presses the inject through the Admin API and reads the debug output from the
editor's websocket. Reported per rekey: ``node_ms``, the node's own input-to-output time
(``elapsed_ms`` in its output); ``flow_ms``, from the inject request to the debug message at the
websocket; and, as the baseline from the same run, ``rest_ms``: the same rekey asked of the
sidecar directly (``POST /rekey``, then ``GET /v1/groups/{g}`` every 2 ms until the target epoch
is committed) with no Node-RED in the path. Prints a table on stderr and, with ``--json``, one
JSON object on stdout. A benchmark, not a test.
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

import nodered  # noqa: E402  (scripts/nodered.py)
from nodered_fixtures import Comms  # noqa: E402  (tests/nodered_fixtures.py)

from gridkey.bench.e2e import p95  # noqa: E402
from helpers import FleetRunner, SidecarProc  # noqa: E402  (tests/helpers.py)

GROUP = "bench-nodered"


def flow(sidecar_url: str, token: str) -> list[dict]:
    return [
        {"id": "bench", "type": "tab", "label": "bench"},
        {"id": "sc", "type": "gridkey-sidecar", "url": sidecar_url, "timeout": 10, "credentials": {"token": token}},
        {
            "id": "go",
            "type": "inject",
            "z": "bench",
            "props": [{"p": "payload"}],
            "payload": "",
            "payloadType": "date",
            "repeat": "",
            "once": False,
            "wires": [["rk"]],
        },
        {
            "id": "rk",
            "type": "gridkey-rekey",
            "z": "bench",
            "sidecar": "sc",
            "group": GROUP,
            "wait": 60,
            "wires": [["out-done"], ["out-failed"]],
        },
        {
            "id": "out-done",
            "type": "debug",
            "z": "bench",
            "name": "done",
            "active": True,
            "tosidebar": True,
            "complete": "payload",
            "targetType": "msg",
            "wires": [],
        },
        {
            "id": "out-failed",
            "type": "debug",
            "z": "bench",
            "name": "failed",
            "active": True,
            "tosidebar": True,
            "complete": "payload",
            "targetType": "msg",
            "wires": [],
        },
    ]


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "p95": p95(values)}


def run(meters: int, rekeys: int, runtimes: list[str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gridkey-bench-nodered-"))
    ids = [f"nb-{i:03d}" for i in range(1, meters + 1)]
    nodered.install(quiet=True)
    tarball = nodered.pack(work / "pack")
    sc = SidecarProc(work / "sc").start()
    fleet = FleetRunner(sc, ids).start()
    results: dict = {"meters": meters, "rekeys": rekeys, "runtimes": {}}
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": ids})
        fleet.wait_epoch(GROUP, 1, ids)
        for name in runtimes:
            rt = nodered.RUNTIMES[name]
            nr = nodered.NodeRed(rt, work / f"user-{name}", tarball)
            nr.prepare()
            nr.start()
            try:
                nr.deploy(flow(sc.http_url, sc.token()))
                comms = Comms(nr.url)
                time.sleep(1.0)  # the config node's event stream connects
                rows = {"node_ms": [], "flow_ms": [], "rest_ms": []}
                for k in range(rekeys + 1):  # the first is a warm-up (connections, JIT) and is dropped
                    t0 = time.perf_counter()
                    assert nr.request("POST", "/inject/go")[0] == 200
                    out = comms.next_debug("done", timeout=60)
                    flow_ms = (time.perf_counter() - t0) * 1000
                    key = fleet.wait_epoch(GROUP, out["epoch"], ids, timeout=30)
                    if key != out["key_id"]:
                        raise SystemExit(f"the node reported {out['key_id']}, the meters hold {key}")
                    time.sleep(0.3)
                    t1 = time.perf_counter()
                    target = sc.api("POST", f"/v1/groups/{GROUP}/rekey")["target_epoch"]
                    while sc.group(GROUP)["epoch"] < target:
                        time.sleep(0.002)
                    rest_ms = (time.perf_counter() - t1) * 1000
                    fleet.wait_epoch(GROUP, target, ids, timeout=30)
                    time.sleep(0.3)
                    if k == 0:
                        continue
                    rows["node_ms"].append(float(out["elapsed_ms"]))
                    rows["flow_ms"].append(round(flow_ms, 1))
                    rows["rest_ms"].append(round(rest_ms, 1))
                    print(
                        f"  Node-RED {rt.version()}: rekey {k}/{rekeys}: node {out['elapsed_ms']} ms, "
                        f"flow {flow_ms:.1f} ms, REST baseline {rest_ms:.1f} ms",
                        file=sys.stderr,
                    )
                comms.close()
                stats = {k: summary(v) for k, v in rows.items()}
                results["runtimes"][name] = {
                    "node_red": rt.version(),
                    "node": rt.node_version(),
                    **rows,
                    "summary": stats,
                    "node_vs_rest_median": round(stats["node_ms"]["median"] / stats["rest_ms"]["median"], 2),
                }
            finally:
                nr.stop()
    finally:
        fleet.stop()
        sc.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=10, help="group size (default 10)")
    ap.add_argument("--rekeys", type=int, default=10, help="timed rekeys per runtime (default 10)")
    ap.add_argument("--runtime", choices=["4", "5", "both"], default="both", help="Node-RED major (default both)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.meters < 2 or args.rekeys < 1:
        ap.error("need --meters >= 2 and --rekeys >= 1")
    result = run(args.meters, args.rekeys, ["4", "5"] if args.runtime == "both" else [args.runtime])
    head = f"\n{'Node-RED':>9} {'Node':>9} {'meters':>6} {'rekeys':>6}"
    cols = "".join(f" {c + ' med':>14} {c + ' p95':>14}" for c in ("node_ms", "flow_ms", "rest_ms"))
    print(head + cols + f" {'node/rest':>9}", file=sys.stderr)
    for r in result["runtimes"].values():
        line = f"{r['node_red']:>9} {r['node']:>9} {result['meters']:>6} {result['rekeys']:>6}"
        for c in ("node_ms", "flow_ms", "rest_ms"):
            line += f" {r['summary'][c]['median']:>14} {r['summary'][c]['p95']:>14}"
        print(line + f" {r['node_vs_rest_median']:>9}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
