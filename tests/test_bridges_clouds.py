"""The aws-iot and azure-iot-hub profiles against Mosquitto brokers configured to enforce each cloud's rules.

AWS-like (tests/mosquitto.py): mutual TLS with the certificate's CN as the thing name, an ACL per
thing, QoS <= 1, 128 KB messages. A test-side "shadow service" answers shadow updates. Checked:
reported state within 1 s of a commit, a publish outside the ACL dead-lettered with MQTT 5 reason
0x87, an oversized payload refused before sending, never more than 100 publishes in any second.

Azure-like: MQTT 3.1.1 over TLS, the device's username, the SAS token minted by
``gridkey bridge sas`` as the broker's password (a wrong one is refused), renewal at the token
window's edge, device-to-cloud topics with url-encoded properties, twin PATCHes answered by a
test-side "twin service" with ``$iothub/twin/res/204/?$rid=...``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from test_bridges import assert_no_key_material, bridge_file, key_material, payloads

from gridkey.bench.mosquitto import Broker, Pki, Received
from gridkey.transports.mqtt import sas
from helpers import FleetRunner, SidecarProc, wait_for

GROUP = "feeder-c"
METERS = ["cm-1", "cm-2", "cm-3"]
THING = "gw-thing"
HUB, DEVICE = "gk-test.azure-devices.net", "gw-dev"


def bridge_status(sc: SidecarProc, name: str) -> dict:
    return next(b for b in sc.api("GET", "/v1/bridges") if b["name"] == name)


# --- AWS IoT Core -------------------------------------------------------------------------------


@pytest.fixture
def aws(tmp_path):
    pki = Pki(tmp_path / "pki")
    broker = Broker(tmp_path / "aws", "aws", pki).start()
    cert, key = pki.issue(THING)
    common = {"profile": "aws-iot", "host": "127.0.0.1", "port": broker.port, "client_id": THING}
    tls = {"ca": str(pki.ca), "cert": str(cert), "key": str(key)}
    conf = tmp_path / "aws.toml"
    bridge_file(conf, name="aws", **common, tls=tls)
    # a second thing (one connection per client id, as on AWS) whose event topic its ACL does not allow
    cert2, key2 = pki.issue(f"{THING}-2")
    denied = {**common, "client_id": f"{THING}-2", "tls": {**tls, "cert": str(cert2), "key": str(key2)}}
    with conf.open("a") as f:
        f.write(bridge_file(tmp_path / "x.toml", name="aws-denied", **denied,
                            topics={"event": "elsewhere/{gateway}/{kind}"}).read_text())  # fmt: skip
    shadow = broker.subscriber(f"$aws/things/{THING}/shadow/update")

    def answer(client, userdata, msg):  # the shadow service: accept every update
        if msg.topic.endswith("/shadow/update"):
            token = json.loads(msg.payload).get("clientToken")
            client.publish(msg.topic + "/accepted", json.dumps({"clientToken": token}), qos=1)

    shadow.client.on_message = answer
    yield broker, conf, pki
    shadow.close()
    broker.stop()


def test_aws_shadow_acl_and_size_limits(tmp_path, aws):
    broker, conf, _ = aws
    sub = broker.subscriber()
    sc = SidecarProc(tmp_path / "sc", controller=True, extra_args=("--bridge", str(conf))).start()
    fleet = FleetRunner(sc, METERS).start()
    try:
        wait_for("both bridges connected", lambda: all(b["connected"] for b in sc.api("GET", "/v1/bridges")), 20)
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        k1 = fleet.wait_epoch(GROUP, 1, METERS)

        def shadow_update() -> list[Received]:
            return [m for m in sub.snapshot() if m.topic == f"$aws/things/{THING}/shadow/update"]

        m = wait_for("the shadow update", shadow_update, 10)[0]
        doc = json.loads(m.payload)
        reported = doc["state"]["reported"]["gridkey"]["groups"][GROUP]
        assert (reported["keyVersion"], reported["keyId"], reported["members"]) == (1, k1, 4)
        assert m.wall - reported["committedAt"] / 1000 < 1.0
        wait_for("the shadow's accepted answer", lambda: bridge_status(sc, "aws")["cloud"]["accepted"] >= 1, 10)
        ev = wait_for("the event", lambda: payloads(sub.snapshot(), f"gridkey/{THING}/events/epoch.committed"), 10)
        assert ev[0]["key_id"] == k1

        # the ACL refuses the other bridge's topic: PUBACK 0x87, dead-lettered with the reason, counted
        denied = wait_for(
            "the denied publish dead-lettered", lambda: bridge_status(sc, "aws-denied")["dead_letters"], 10
        )
        assert "Not authorized" in denied[0]["reason"] and "0x87" in denied[0]["reason"]
        st = bridge_status(sc, "aws-denied")
        assert st["counters"]["dead_lettered"] >= 1 and st["counters"]["published"] >= 1  # its shadow was fine
        assert not [m for m in sub.snapshot() if m.topic.startswith("elsewhere/")]
        assert 'gridkey_bridge_dead_lettered_total{bridge="aws-denied"}' in sc.http.get("/metrics").text

        # a payload over 128 KB never leaves: refused before sending, with the reason
        r = subprocess.run(
            [sys.executable, "-m", "gridkey.cli", "bridge", "check", str(conf), "--bridge", "aws",
             "--probe-bytes", "140000"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 1
        assert "refused before sending: payload is" in r.stdout and "aws-iot allows 131072" in r.stdout
        assert_no_key_material(sub.snapshot(), key_material(fleet, GROUP))
    finally:
        fleet.stop()
        sc.stop()
        sub.close()


def test_aws_never_more_than_100_publishes_in_any_second(tmp_path, aws):
    broker, conf, _ = aws
    sub = broker.subscriber(f"gridkey/{THING}/#")
    sc = SidecarProc(tmp_path / "sc", controller=True, extra_args=("--bridge", str(conf))).start()
    fleet = FleetRunner(sc, METERS).start()
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        fleet.wait_epoch(GROUP, 1, METERS)
        wait_for("the bridge to drain", lambda: bridge_status(sc, "aws")["outbox"]["messages"] == 0, 10)
        before = len(sub.snapshot())

        async def burst():
            import asyncio

            return await asyncio.gather(
                *(fleet.agent(m).send_reading(GROUP, {"kWh": i}) for i in range(120) for m in METERS)
            )

        fleet.loop.run(burst())  # 360 readings as fast as the gateway takes them
        wait_for("every reading at the broker", lambda: len(sub.snapshot()) - before >= 360, 30)
        times = sorted(m.at for m in sub.snapshot()[before:] if "/telemetry/" in m.topic)
        assert len(times) == 360
        most = max(sum(1 for t in times[i:] if t - times[i] < 1.0) for i in range(len(times)))
        assert most <= 100, f"{most} publishes within one second"
        assert times[-1] - times[0] >= 2.5  # the limiter held them back (360 at <= 100/s)
    finally:
        fleet.stop()
        sc.stop()
        sub.close()


# --- Azure IoT Hub ------------------------------------------------------------------------------


def mint(key_file: Path, ttl: int, at: float | None = None) -> str:
    argv = [sys.executable, "-m", "gridkey.cli", "bridge", "sas", "--hub", HUB, "--device", DEVICE,
            "--key-file", str(key_file), "--ttl", str(ttl)]  # fmt: skip
    if at is not None:
        argv += ["--at", str(at)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


def test_azure_sas_twin_and_device_to_cloud(tmp_path):
    ttl = 20
    key_file = tmp_path / "device.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    username = f"{HUB}/{DEVICE}/?api-version=2021-04-12"
    pki = Pki(tmp_path / "pki")
    # start inside a window with enough of it left to connect before the edge
    while time.time() % ttl > ttl - 14:
        time.sleep(0.2)
    broker = Broker(tmp_path / "azure", "azure", pki, username=username, device=DEVICE, password="wrong")
    broker.start()
    conf = bridge_file(
        tmp_path / "azure.toml", name="azure", profile="azure-iot-hub", host="127.0.0.1", port=broker.port,
        client_id=DEVICE, tls={"ca": str(pki.ca)}, auth={"hub": HUB, "sas_key_file": str(key_file), "sas_ttl": ttl},
    )  # fmt: skip
    twin = broker.subscriber("$iothub/twin/PATCH/properties/reported/#")

    def answer(client, userdata, msg):  # the twin service: 204 for every PATCH, echoing $rid
        rid = parse_qs(msg.topic.partition("?")[2])["$rid"][0]
        client.publish(f"$iothub/twin/res/204/?$rid={rid}&$version=2", b"", qos=1)

    twin.client.on_message = answer
    sub = broker.subscriber()
    sc = SidecarProc(tmp_path / "sc", controller=True, extra_args=("--bridge", str(conf))).start()
    fleet = None
    try:
        # the broker holds a wrong token: refused, and said so
        st = wait_for("the refusal", lambda: (s := bridge_status(sc, "azure"))["last_error"] and s, 20)
        assert not st["connected"] and "refused" in st["last_error"], st["last_error"]
        # the token gridkey bridge sas mints is the one the bridge uses: accepted
        token = mint(key_file, ttl)
        assert token.startswith(f"SharedAccessSignature sr={HUB}%2Fdevices%2F{DEVICE}&sig=")
        broker.set_password(username, token)
        st = wait_for("connected", lambda: (s := bridge_status(sc, "azure"))["connected"] and s, 30)
        assert st["token_expires_at"] == sas.expiry_of(token)

        fleet = FleetRunner(sc, METERS).start()
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        k1 = fleet.wait_epoch(GROUP, 1, METERS)
        patch = wait_for(
            "the twin PATCH", lambda: [m for m in sub.snapshot() if m.topic.startswith("$iothub/twin/PATCH")], 10
        )[0]
        assert patch.topic.startswith("$iothub/twin/PATCH/properties/reported/?$rid=")
        reported = json.loads(patch.payload)["gridkey"]["groups"][GROUP]
        assert (reported["keyVersion"], reported["keyId"]) == (1, k1)
        assert patch.wall - reported["committedAt"] / 1000 < 1.0
        wait_for("the twin's 204", lambda: bridge_status(sc, "azure")["cloud"]["accepted"] >= 1, 10)
        d2c = [m for m in sub.snapshot() if m.topic.startswith(f"devices/{DEVICE}/messages/events/")]
        ev = next(m for m in d2c if "kind=epoch.committed" in m.topic)
        assert "$.ct=application%2Fjson&$.ce=utf-8" in ev.topic and json.loads(ev.payload)["key_id"] == k1

        # renewal: at the window's edge the bridge reconnects with the next window's token. The broker
        # still holds the current one, so the new connection is refused until the test provisions the
        # next token: it connects then, which proves it presented the new token and not the old.
        expiry = sas.expiry_of(token)
        st = wait_for("the renewal at the edge", lambda: (s := bridge_status(sc, "azure"))["token_expires_at"]
                      == expiry + ttl and s, expiry - ttl - time.time() + 10)  # fmt: skip
        broker.set_password(username, mint(key_file, ttl, at=expiry - ttl + 0.5))
        st = wait_for("connected with the new token", lambda: (s := bridge_status(sc, "azure"))["connected"]
                      and s["token_expires_at"] == expiry + ttl and s, 20)  # fmt: skip
        assert st["reconnects"] >= 2
        assert_no_key_material(sub.snapshot(), key_material(fleet, GROUP))
    finally:
        if fleet is not None:
            fleet.stop()
        sc.stop()
        sub.close()
        twin.close()
        broker.stop()
    assert token not in sc.log_path.read_text() and "sig=" not in sc.log_path.read_text()  # never logged
