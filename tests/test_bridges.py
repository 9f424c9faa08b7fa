"""MQTT bridges end to end: a real sidecar and fleet, real Mosquitto brokers set up like each cloud.

What the cloud receives is checked on the broker by a test subscriber: key-lifecycle events and
reported state for every epoch, telemetry as the encrypted envelope (which a group member can
open) or decrypted, stable message ids, and never a byte of any epoch's key material. The
generic profile is here; the AWS- and Azure-like brokers, outages and crashes have their own modules.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridkey.bench.mosquitto import Broker, Received
from gridkey.protocol.groupdata import GroupChannel, parse_data_message
from helpers import FleetRunner, SidecarProc, unexpected_tracebacks, wait_for

GROUP = "feeder-b"
METERS = ["bm-1", "bm-2", "bm-3"]


def bridge_file(path: Path, **fields) -> Path:
    """A [[bridge]] table from keyword fields; nested tables as dicts."""
    lines = ["[[bridge]]"]
    tables = {k: v for k, v in fields.items() if isinstance(v, dict)}
    for k, v in fields.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {json.dumps(v)}")
    for name, table in tables.items():
        lines.append(f"[bridge.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def payloads(received: list[Received], topic_part: str = "") -> list[dict]:
    return [json.loads(m.payload) for m in received if topic_part in m.topic]


def key_material(fleet: FleetRunner, group: str) -> list[bytes]:
    """Every secret any member holds for any epoch of ``group`` (to prove none of it left)."""
    secrets = []
    for mid in fleet.ids:
        agent = fleet.agent(mid)
        view = agent.groups.get(group)
        for ch in view.channels.values() if view else ():
            secrets += [ch.keys.aead_key, ch.keys.base_iv, ch.keys.exporter_secret]
    return secrets


def assert_no_key_material(received: list[Received], secrets: list[bytes]) -> None:
    assert secrets, "the members held no keys: nothing was checked"
    for m in received:
        for s in secrets:
            for form in (s, s.hex().encode(), base64.b64encode(s), base64.b64encode(s).rstrip(b"=")):
                assert form not in m.payload, f"key material in {m.topic}"
            # and not hidden inside a base64 field either
            for v in json.loads(m.payload).values() if m.payload.startswith(b"{") else ():
                if isinstance(v, str) and len(v) > 20:
                    with contextlib.suppress(ValueError):
                        assert s not in base64.b64decode(v + "==")


@pytest.fixture
def plain_broker(tmp_path):
    broker = Broker(tmp_path / "broker", "plain").start()
    yield broker
    broker.stop()


def start_stack(tmp_path, broker: Broker, *, controller=True, **bridge):
    conf = bridge_file(
        tmp_path / "bridges.toml", name="uplink", profile="generic", host="127.0.0.1", port=broker.port, **bridge
    )
    sc = SidecarProc(tmp_path / "sc", controller=controller, extra_args=("--bridge", str(conf))).start()
    fleet = FleetRunner(sc, METERS).start()
    return sc, fleet


def test_lifecycle_and_telemetry_reach_the_broker_without_key_material(tmp_path, plain_broker):
    sub = plain_broker.subscriber()
    sc, fleet = start_stack(tmp_path, plain_broker, mqtt="5")
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        k1 = fleet.wait_epoch(GROUP, 1, METERS)

        def committed(epoch: int) -> dict | None:
            got = [p for p in payloads(sub.snapshot(), "/events/epoch.committed") if p["epoch"] == epoch]
            return got[0] if got else None

        ev = wait_for("epoch 1 at the broker", lambda: committed(1), 10)
        assert (ev["group_id"], ev["key_id"], ev["trigger"]) == (GROUP, k1, "create")
        assert sorted(ev["members"]) == sorted([*METERS, "controller"]) and ev["gateway"] == "gateway"
        prefix = sc.api("GET", "/v1/bridges")[0]["id_prefix"]
        assert prefix.startswith("gateway-") and ev["msg_id"] == f"{prefix}:{ev['event_id']}:0"
        assert isinstance(ev["duration_ms"], int)
        state = wait_for("the retained state", lambda: payloads(sub.snapshot(), f"/state/{GROUP}"), 10)[-1]
        assert (state["keyVersion"], state["keyId"], state["members"]) == (1, k1, 4)

        # a reading: the cloud gets the envelope the gateway relays, which only a member can open
        out = fleet.loop.run(fleet.agent("bm-1").send_reading(GROUP, {"kWh": 1.25}))
        tel = wait_for("the telemetry", lambda: payloads(sub.snapshot(), f"/telemetry/{GROUP}"), 10)[-1]
        assert (tel["sender"], tel["epoch"], tel["key_id"], tel["seq"]) == ("bm-1", 1, k1, 0)
        envelope = base64.b64decode(tel["envelope"])
        assert parse_data_message(envelope)[0].hex() == k1 and "value" not in tel
        ch = fleet.loop.call(lambda: fleet.agent("bm-2").current_channel(GROUP))
        opened = GroupChannel(ch.suite, ch.keys, "bm-2").open(envelope)  # a fresh replay window
        assert json.loads(opened.plaintext) == {"kWh": 1.25} and out["id"] > 0

        # a revocation: the event, the member leaving the group, and the next epoch's state
        sc.api("POST", "/v1/meters/bm-3/revoke", json={"reason": "keyCompromise"})
        k2 = fleet.wait_epoch(GROUP, 2, METERS[:2])
        ev2 = wait_for("epoch 2 at the broker", lambda: committed(2), 10)
        assert ev2["key_id"] == k2 and "bm-3" not in ev2["members"]
        got = sub.snapshot()
        revoked = payloads(got, "/events/meter.revoked")[-1]
        assert (revoked["meter_id"], revoked["reason"]) == ("bm-3", "keyCompromise")
        assert payloads(got, "/events/member.removed")[-1]["meter_id"] == "bm-3"

        def state_of(epoch: int) -> list[Received]:
            return [m for m in sub.snapshot() if "/state/" in m.topic and json.loads(m.payload)["keyVersion"] == epoch]

        (m2,) = wait_for("the new state", lambda: state_of(2), 5)
        s2 = json.loads(m2.payload)
        assert s2["keyId"] == k2 and m2.wall - s2["committedAt"] / 1000 < 1.0  # reported within 1 s of the commit

        got = sub.snapshot()
        # every message carries its id as an MQTT 5 user property too, and ids are unique
        ids = [json.loads(m.payload)["msg_id"] for m in got]
        assert [m.properties.get("msg_id") for m in got] == ids and len(set(ids)) == len(ids)
        assert_no_key_material(got, key_material(fleet, GROUP))

        (b,) = wait_for("the outbox drained", lambda: (st := sc.api("GET", "/v1/bridges"))[0]["outbox"]["messages"]
                        == 0 and st, 10)  # fmt: skip
        got = wait_for("every message at the broker", lambda: (g := sub.snapshot()) and len(g) >= b["counters"]
                       ["published"] and g, 10)  # fmt: skip
        assert b["connected"] and b["counters"]["published"] == len(got) and b["intake_error"] is None
        metrics = sc.http.get("/metrics").text
        assert 'gridkey_bridge_connected{bridge="uplink"} 1.0' in metrics
        assert f'gridkey_bridge_published_total{{bridge="uplink"}} {float(len(got))}' in metrics
    finally:
        fleet.stop()
        sc.stop()
        sub.close()
    assert not unexpected_tracebacks(sc.log_path.read_text(errors="replace")), sc.tail(60)


def test_decrypted_telemetry_needs_the_controller_and_carries_the_value(tmp_path, plain_broker):
    conf = bridge_file(tmp_path / "b.toml", name="u", host="127.0.0.1", port=plain_broker.port, telemetry="decrypted")
    refused = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "serve", "--data", str(tmp_path / "x"), "--bridge", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "telemetry: 'decrypted' needs --controller" in refused.stderr

    sub = plain_broker.subscriber()
    sc, fleet = start_stack(tmp_path, plain_broker, telemetry="decrypted")
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        fleet.wait_epoch(GROUP, 1, METERS)
        fleet.loop.run(fleet.agent("bm-2").send_reading(GROUP, {"kWh": 0.75, "ts": 5}))
        tel = wait_for("the telemetry", lambda: payloads(sub.snapshot(), "/telemetry/"), 10)[-1]
        assert tel["value_status"] == "decrypted" and tel["value"] == {"kWh": 0.75, "ts": 5}
        assert "envelope" not in tel and tel["sender"] == "bm-2"
    finally:
        fleet.stop()
        sc.stop()
        sub.close()


@pytest.mark.parametrize(
    ("fields", "expect"),
    [
        ({"profile": "aws-iot", "client_id": "t"}, "bridge 'bad': tls: aws-iot authenticates with mutual TLS"),
        ({"qos": 2}, "bridge 'bad': qos: must be 0 or 1"),
        ({"profile": "cloud9"}, "bridge 'bad': profile: must be one of generic, aws-iot, azure-iot-hub"),
    ],
)
def test_serve_refuses_an_invalid_bridge_at_start(tmp_path, fields, expect):
    conf = bridge_file(tmp_path / "b.toml", name="bad", host="127.0.0.1", **fields)
    r = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "serve", "--data", str(tmp_path / "d"), "--bridge", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and expect in r.stderr, r.stderr


def test_bridge_check_reports_what_the_broker_answered(tmp_path, plain_broker):
    good = bridge_file(tmp_path / "good.toml", name="g", host="127.0.0.1", port=plain_broker.port, mqtt="5")
    sub = plain_broker.subscriber()
    r = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "bridge", "check", str(good)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (
        report["published"] and report["connack"] == "Success" and report["topic"] == "gridkey/gridkey-g/events/probe"
    )
    wait_for("the probe at the broker", lambda: payloads(sub.snapshot(), "/events/probe"), 5)
    sub.close()
    plain_broker.stop()
    r = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "bridge", "check", str(good), "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Connection refused" in json.loads(r.stdout)["error"], r.stdout
