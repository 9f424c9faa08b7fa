"""The GridKey nodes in a real ``node-red`` process, on Node-RED 4.1 (Node 20) and 5.x (Node 22).

The package is installed the way users install it (the ``npm pack`` tarball into the user dir), the
example flows are deployed through the Admin API (``POST /flows``, ``Node-RED-API-Version: v2``,
the token inline as a credential), and each example runs against a real sidecar and a fleet of real
meter agents: its inject is pressed through the inject node's admin endpoint and its debug output
read from the editor's comms websocket, as the debug sidebar would show it. Then: ``GET /nodes``
lists every GridKey type, the token appears nowhere in the exported flows or the flow file, and
status texts are translated from ``locales/en-US``.
"""

from __future__ import annotations

import json

import pytest
from nodered_fixtures import Comms

from helpers import FleetRunner, SidecarProc, wait_for

GROUP = "feeder-7"  # the examples' group
METERS = [f"meter-{i:03d}" for i in range(1, 11)]
NODE_TYPES = {
    "gridkey-sidecar",
    "gridkey-meter",
    "gridkey-group",
    "gridkey-rekey",
    "gridkey-key-events",
    "gridkey-command",
    "gridkey-readings",
}


@pytest.fixture
def stack(tmp_path):
    sc = SidecarProc(tmp_path / "sc", controller=True).start()
    fleet = FleetRunner(sc, METERS).start()
    sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
    fleet.wait_epoch(GROUP, 1, METERS)
    yield sc, fleet
    fleet.stop()
    sc.stop()
    assert "Traceback" not in sc.log_path.read_text(errors="replace")


@pytest.mark.parametrize("runtime", ["4", "5"])
def test_example_flows_run_in_a_real_node_red(runtime, stack, start_nodered, nodered_script):
    sc, fleet = stack
    nr = start_nodered(runtime)
    status, settings = nr.request("GET", "/settings")
    assert status == 200 and settings["version"].split(".")[0] == runtime

    # the palette: every GridKey type, from the one module, loaded without error
    status, sets = nr.request("GET", "/nodes")
    ours = [s for s in sets if s["module"] == "@gridkey/node-red-gridkey"]
    assert {t for s in ours for t in s["types"]} == NODE_TYPES
    assert all(s["enabled"] and not s.get("err") for s in ours), ours

    token = sc.token()
    nr.deploy(nodered_script.example_flows(sc.http_url, token))
    comms = Comms(nr.url)
    try:
        # Watch key versions shows the group's current key version once connected
        wait_for(
            "the key events node's status",
            lambda: any(s.get("text", "").startswith("epoch 1 · ") for s in comms.statuses.get("ex2-events", [])),
        )

        # Rekey on tamper alarm: inject -> switch -> rekey -> "new epoch" once every meter holds it
        assert nr.request("POST", "/inject/ex1-alarm")[0] == 200
        new = comms.next_debug("new epoch")
        assert new["group_id"] == GROUP and new["epoch"] == 2 and new["trigger"] == "manual"
        assert new["key_id"] == fleet.wait_epoch(GROUP, 2, METERS)
        assert sorted(new["members"]) == sorted([*METERS, "controller"])
        watched = comms.next_debug("key version")
        assert (watched["epoch"], watched["key_id"]) == (2, new["key_id"])
        # translated status texts (locales/en-US), not message keys
        wait_for("the rekey node's status", lambda: comms.statuses.get("ex1-rekey", [{}])[-1].get("text"))
        assert comms.statuses["ex1-rekey"][-1]["text"] == f"epoch 2 · {new['key_id']}"

        # Send a demand-response command: every meter decrypts it
        assert nr.request("POST", "/inject/ex4-shed")[0] == 200
        sent = comms.next_debug("sent")
        assert sent["group_id"] == GROUP and sent["epoch"] == 2
        wait_for(
            "the command at every meter",
            lambda: all(s["commands_received"] >= 1 for m, s in fleet.status().items() if m in METERS),
        )

        # Forward readings: a meter's reading appears with the gateway's metadata
        out = fleet.loop.run(fleet.agent("meter-002").send_reading(GROUP, {"kWh": 0.5}))
        reading = comms.next_debug("reading")
        assert (reading["sender"], reading["msg_id"], reading["epoch"]) == ("meter-002", out["id"], 2)

        # Revoke a meter: revoked, and the group rekeys without it
        assert nr.request("POST", "/inject/ex3-revoke")[0] == 200
        revoked = comms.next_debug("revoked")
        assert revoked["meter_id"] == "meter-003" and revoked["status"] == "revoked"
        stay = [m for m in METERS if m != "meter-003"]
        k3 = fleet.wait_epoch(GROUP, 3, stay)
        removed = comms.next_debug("key version")
        assert (removed["meter_id"], removed["reason"]) == ("meter-003", "revoke")  # member.removed, then the epoch
        assert comms.next_debug("key version")["key_id"] == k3

        # Form a group: listing the epochs shows all three
        assert nr.request("POST", "/inject/ex6-epochs")[0] == 200
        assert [e["epoch"] for e in comms.next_debug("group")] == [3, 2, 1]
    finally:
        comms.close()

    # the token is a credential: not in the flows Node-RED exports, not in the flow file
    status, exported = nr.request("GET", "/flows", headers={"Node-RED-API-Version": "v2"})
    assert status == 200
    text = json.dumps(exported)
    assert token not in text and '"token"' not in text
    config = next(n for n in exported["flows"] if n["type"] == "gridkey-sidecar")
    assert config["url"] == sc.http_url
    assert token not in (nr.user_dir / "flows.json").read_text()
    assert token not in (nr.user_dir / "flows_cred.json").read_text()  # encrypted with credentialSecret
    status, creds = nr.request("GET", f"/credentials/gridkey-sidecar/{config['id']}")
    assert status == 200 and creds == {"has_token": True}
