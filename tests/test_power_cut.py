"""A fleet-wide power cut between bundle 2 and the Commit: every meter must hold the group's current
key again, without an operator, within a stated bound.

The gateway holds its first Commit for a few seconds (``GRIDKEY_FAULT=pause:epoch-commit:MS``), so
the kill -9 of the whole fleet process lands while every meter has confirmed and waits for it. The
restarted meters hold no key for the epoch the gateway then commits (keys live in memory only);
each asks, signed, to be rekeyed, and one rate-limited rekey answers them all.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

from test_crash import CrashSidecar

from helpers import wait_for

GROUP = "pc"
METERS = [f"pc-{i:03d}" for i in range(1, 5)]
PAUSE_MS = 6000
RECOVERY_BOUND_S = 45.0  # measured 2.6 s on an idle 2-core machine; a loaded CI box runs 2 workers


def fleet(sc: CrashSidecar, status) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gridkey.cli", "fleet", "--data", str(sc.data.path), "--count", str(len(METERS)),
         "--prefix", "pc-", "--server", sc.coap_url, "--status-file", str(status), "--resync", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def enrolled(status) -> set[str]:
    """The meters the fleet's status file says are enrolled (it lists the others too, still trying)."""
    try:
        return {m["meter_id"] for m in json.loads(status.read_text())["meters"] if m["enrolled"]}
    except (FileNotFoundError, json.JSONDecodeError):
        return set()


def held(status) -> dict[str, tuple[int, str | None]]:
    try:
        meters = json.loads(status.read_text())["meters"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {m["meter_id"]: (m["groups"].get(GROUP, {}).get("epoch", 0), m["groups"].get(GROUP, {}).get("key_id"))
            for m in meters}  # fmt: skip


def test_every_meter_regains_the_current_key_after_a_power_cut(tmp_path):
    sc = CrashSidecar(tmp_path / "sc", session_timeout_ms=8000).start(fault=f"pause:epoch-commit:{PAUSE_MS}")
    status = tmp_path / "fleet.json"
    proc = fleet(sc, status)
    try:
        wait_for("fleet enrolled", lambda: enrolled(status) == set(METERS), 30)
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": METERS})
        wait_for("round 2 bundled", lambda: any(e["kind"] == "session.bundle2" for e in events(sc)), 20)
        time.sleep(1.0)  # every meter confirms within milliseconds; the Commit is held for 6 s
        proc.send_signal(signal.SIGKILL)  # the power cut
        proc.wait(10)
        assert sc.group(GROUP)["epoch"] == 0, "the Commit went out before the cut: nothing was tested"
        assert all(e == 0 for e, _ in held(status).values()), "a meter held the key before the cut"

        # the gateway commits epoch 1 with every meter's confirmation: they were waiting for the Commit
        wait_for("epoch 1 committed", lambda: sc.group(GROUP)["epoch"] >= 1, PAUSE_MS / 1000 + 10)
        first = sc.api("GET", f"/v1/groups/{GROUP}/epochs")[-1]
        assert first["epoch"] == 1 and sorted(first["members"]) == METERS

        status.unlink()
        t0 = time.monotonic()
        proc = fleet(sc, status)

        def recovered() -> bool:
            g = sc.group(GROUP)
            h = held(status)
            return len(h) == len(METERS) and all(v == (g["epoch"], g["key_id"]) for v in h.values())

        try:
            wait_for("every meter holds the current key again", recovered, RECOVERY_BOUND_S)
        except AssertionError as exc:
            epochs = sc.api("GET", f"/v1/groups/{GROUP}/epochs")
            raise AssertionError(f"{exc}\nheld: {held(status)}\ngroup: {sc.group(GROUP)}\nepochs: {epochs}\n"
                                 f"{sc.tail(40)}") from None  # fmt: skip
        took = time.monotonic() - t0
        g = sc.group(GROUP)
        assert g["epoch"] >= 2
        epochs = sc.api("GET", f"/v1/groups/{GROUP}/epochs")
        assert any(e["trigger"] == "keyless" for e in epochs), epochs
        print(f"power cut: {len(METERS)} meters back on epoch {g['epoch']} in {took:.1f} s after restart")
    finally:
        proc.kill()
        proc.communicate(timeout=20)
        sc.stop()


def events(sc: CrashSidecar) -> list[dict]:
    db = sqlite3.connect(sc.db_path)
    try:
        return [{"id": i, "kind": k} for i, k in db.execute("SELECT id, kind FROM events ORDER BY id")]
    finally:
        db.close()
