"""LwM2M against a real Eclipse Leshan server: the sidecar registers every meter (and itself), and
Leshan's REST API and event stream read, observe, write and execute GridKey's objects.

One module-scoped stack (Leshan, a sidecar with ``--lwm2m-server``, five meters) serves the tests
in order; each test says what it proves.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from helpers import FleetRunner, SidecarProc, wait_for

GROUP = "feeder-l"
METERS = [f"lw-{i}" for i in range(1, 6)]
FORMATS = ("TEXT", "TLV", "SENML_JSON", "SENML_CBOR")
LIFETIME = 10


@pytest.fixture(scope="module")
def stack(leshan, tmp_path_factory):
    work: Path = tmp_path_factory.mktemp("lwm2m")
    sc = SidecarProc(
        work / "sc",
        controller=True,
        extra_args=("--lwm2m-server", leshan.coap_url, "--lwm2m-lifetime", str(LIFETIME)),
    ).start()
    fleet = FleetRunner(sc, METERS).start()
    sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
    fleet.wait_epoch(GROUP, 1, METERS)
    yield leshan, sc, fleet
    fleet.stop()
    sc.stop()


def clients(leshan) -> dict[str, dict]:
    return {c["endpoint"]: c for c in leshan.api("/api/clients")}


def read(leshan, ep: str, path: str, fmt: str = "TLV") -> dict:
    r = leshan.api(f"/api/clients/{ep}/{path}?format={fmt}&timeout=10")
    assert r["success"], (ep, path, fmt, r)
    return r["content"]


def instance_of(leshan, ep: str, group: str) -> int:
    """The 33001 instance id that holds ``group`` on this endpoint."""
    content = read(leshan, ep, "33001")
    for inst in content["instances"]:
        values = {r["id"]: r["value"] for r in inst["resources"]}
        if values[0] == group:
            return inst["id"]
    raise AssertionError(f"{ep} has no 33001 instance for {group}: {content}")


def test_every_meter_and_the_gateway_register(stack):
    leshan, _, _ = stack
    wait_for("6 endpoints", lambda: set(clients(leshan)) >= {*METERS, "gateway"}, 30)
    reg = clients(leshan)["lw-1"]
    assert reg["lwM2mVersion"] == "1.1" and reg["bindingMode"] == "U"
    links = {link["url"] for link in reg["objectLinks"]}
    assert {"/3/0", "/33001/0", "/33002/0"} <= links


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_match_the_rest_api_in_every_format(stack, fmt):
    """Key version, key id and state read through Leshan equal what the REST API reports."""
    leshan, sc, _ = stack
    g = sc.group(GROUP)
    for ep in METERS:
        iid = instance_of(leshan, ep, GROUP)
        assert read(leshan, ep, f"33001/{iid}/1", fmt)["value"] == g["epoch"]
        assert read(leshan, ep, f"33001/{iid}/2", fmt)["value"] == g["key_id"]  # Leshan shows opaque as hex
        assert read(leshan, ep, f"33001/{iid}/3", fmt)["value"] == "established"
        assert read(leshan, ep, f"33001/{iid}/4", fmt)["value"] == len(g["epoch_members"])
    cred = {
        r["id"]: r["value"]
        for r in read(leshan, "lw-1", "33002/0", "SENML_CBOR" if fmt == "TEXT" else fmt)["resources"]
    }
    meter = sc.api("GET", "/v1/meters/lw-1")
    assert cred[0] == "lw-1" and cred[2] == meter["fingerprint"] and cred[4] is False


def test_execute_rekey_through_leshan_and_observe_the_new_key_version(stack):
    leshan, sc, fleet = stack
    before = sc.group(GROUP)["epoch"]
    iid = instance_of(leshan, "lw-1", GROUP)
    with leshan.events("lw-1", timeout=20) as stream:
        obs = leshan.api(f"/api/clients/lw-1/33001/{iid}/1/observe?format=TLV&timeout=10", method="POST")
        assert obs["success"], obs
        t0 = time.monotonic()
        done = leshan.api(f"/api/clients/lw-1/33001/{iid}/10?timeout=10", method="POST")
        assert done["success"], done
        key_id = fleet.wait_epoch(GROUP, before + 1, METERS, timeout=30)
        elapsed_ms = (time.monotonic() - t0) * 1000
        deadline = time.monotonic() + 20
        seen = None
        while time.monotonic() < deadline:
            ev = stream.next(timeout=max(0.1, deadline - time.monotonic()))
            if ev.event == "NOTIFICATION":
                body = ev.json()
                if body.get("res", "").endswith(f"/33001/{iid}/1") and body["val"]["value"] == before + 1:
                    seen = body
                    break
        assert seen is not None, "no NOTIFICATION with the new key version reached Leshan"
    assert sc.group(GROUP)["key_id"] == key_id
    epochs = sc.api("GET", f"/v1/groups/{GROUP}/epochs")
    assert epochs[0]["trigger"] == "manual"
    audit = sc.api("GET", "/v1/audit", params={"limit": 1000})
    assert any(e["action"] == "group.rekey" and e["actor"].startswith("lwm2m:") for e in audit)
    print(f"\nLeshan execute -> every member committed: {elapsed_ms:.0f} ms")
    leshan.api(f"/api/clients/lw-1/33001/{iid}/1/observe", method="DELETE")


def test_write_rekey_interval_changes_periodic_rekeys(stack):
    leshan, sc, _ = stack
    iid = instance_of(leshan, "lw-2", GROUP)
    r = leshan.api(
        f"/api/clients/lw-2/33001/{iid}/9?format=TLV&timeout=10&replace=true",
        method="PUT",
        body={"id": 9, "value": 1},
    )
    assert r["success"], r
    assert sc.group(GROUP)["rekey_interval_s"] == 1
    start = sc.group(GROUP)["epoch"]
    wait_for("a periodic rekey", lambda: sc.group(GROUP)["epoch"] >= start + 1, 20)
    r = leshan.api(
        f"/api/clients/lw-2/33001/{iid}/9?format=TEXT&timeout=10&replace=true", method="PUT", body={"id": 9, "value": 0}
    )
    assert r["success"], r
    assert sc.group(GROUP)["rekey_interval_s"] == 0
    assert any(e["trigger"] == "periodic" for e in sc.api("GET", f"/v1/groups/{GROUP}/epochs"))
    # a read-only resource refuses writes
    bad = leshan.api(f"/api/clients/lw-2/33001/{iid}/1?format=TLV&timeout=10", method="PUT", body={"id": 1, "value": 7})
    assert not bad["success"] and "METHOD_NOT_ALLOWED" in bad["status"]


def test_execute_leave_removes_the_meter_and_the_rest_rekey(stack):
    leshan, sc, fleet = stack
    wait_for("no live session", lambda: sc.group(GROUP)["session"]["state"] in ("committed", "aborted"), 20)
    before = sc.group(GROUP)["epoch"]
    iid = instance_of(leshan, "lw-5", GROUP)
    r = leshan.api(f"/api/clients/lw-5/33001/{iid}/11?timeout=10", method="POST")
    assert r["success"], r
    rest = [m for m in METERS if m != "lw-5"]
    fleet.wait_epoch(GROUP, before + 1, rest, timeout=30)
    g = sc.group(GROUP)
    assert "lw-5" not in g["epoch_members"]
    # the endpoint updated its registration: it no longer has an instance for the group
    wait_for(
        "lw-5 to drop its 33001 instance",
        lambda: not any(i for i in read(leshan, "lw-5", "33001").get("instances", [])),
        20,
    )


def test_registrations_stay_alive_through_lifetime_updates(stack):
    leshan, _, _ = stack
    first = {ep: c["registrationId"] for ep, c in clients(leshan).items()}
    time.sleep(LIFETIME * 1.5)  # past the lifetime: only Updates keep the registrations alive
    now = clients(leshan)
    assert set(now) >= {*METERS, "gateway"}
    assert all(now[ep]["registrationId"] == first[ep] for ep in (*METERS, "gateway"))
    assert any(now[ep]["lastUpdate"] != now[ep]["registrationDate"] for ep in METERS)


def test_leshan_restart_is_survived(stack):
    leshan, _, _ = stack
    before = {ep: c["registrationId"] for ep, c in clients(leshan).items()}
    leshan.restart()
    # a restarted Leshan knows nobody until each endpoint's next Update gets 4.04 and it registers
    # again: under new registration ids (the same ids would mean nothing was tested)
    wait_for("re-registration after a Leshan restart", lambda: set(clients(leshan)) >= {*METERS, "gateway"}, 40)
    now = clients(leshan)
    assert all(now[ep]["registrationId"] != before[ep] for ep in (*METERS, "gateway")), (before, now)
    assert read(leshan, "lw-1", f"33001/{instance_of(leshan, 'lw-1', GROUP)}/3")["value"] in (
        "established",
        "negotiating",
    )


def test_sidecar_restart_re_registers(stack):
    leshan, sc, _ = stack
    before = {ep: c["registrationId"] for ep, c in clients(leshan).items()}
    sc.restart()
    wait_for(
        "new registrations from the restarted sidecar",
        lambda: all(
            ep in (now := clients(leshan)) and now[ep]["registrationId"] != before.get(ep) for ep in ("lw-1", "gateway")
        ),
        40,
    )
    g = sc.group(GROUP)
    assert read(leshan, "lw-1", f"33001/{instance_of(leshan, 'lw-1', GROUP)}/1")["value"] == g["epoch"]


def test_malformed_requests_to_an_endpoint_get_4xx(stack):
    leshan, _, _ = stack
    address = clients(leshan)["lw-1"]["address"]  # e.g. "/127.0.0.1:40001"
    host, port = address.strip("/").rsplit(":", 1)
    base = f"coap://{host}:{port}"

    async def probe() -> list[tuple[str, Code]]:
        ctx = await aiocoap.Context.create_client_context()
        cases = [
            (Code.GET, "/99999/0/0", b"", None, None),  # id out of range
            (Code.GET, "/4242/0", b"", None, None),  # unknown object
            (Code.GET, "/33001/77", b"", None, None),  # unknown instance
            (Code.GET, "/33001/0/99", b"", None, None),  # unknown resource
            (Code.GET, "/33001/0/10", b"", None, None),  # executable: not readable
            (Code.GET, "/abc", b"", None, None),  # not a path
            (Code.GET, "/3/0/0", b"", 9999, None),  # unknown Accept format
            (Code.PUT, "/33001/0/9", b"\xff\xfe\x00", 11542, None),  # garbage TLV
            (Code.PUT, "/33001/0/9", b"not a number", 0, None),  # wrong text
            (Code.PUT, "/33001/0/1", b"5", 0, None),  # read-only resource
            (Code.PUT, "/33001/0/9", b"", None, "pmin=abc"),  # bad attribute
            (Code.POST, "/33001/0/1", b"", None, None),  # execute a readable resource
            (Code.POST, "/33002", b"\x00", 11542, None),  # create where not allowed
            (Code.DELETE, "/3/0", b"", None, None),  # delete the device
            (Code.FETCH, "/3/0", b"", None, None),  # not an LwM2M operation
            (Code.POST, "/33001", bytes(range(256)), 112, None),  # random SenML CBOR
        ]
        out = []
        for code, path, payload, fmt, query in cases:
            kw = {}
            if fmt is not None:
                kw["content_format" if code in (Code.PUT, Code.POST) else "accept"] = fmt
            msg = aiocoap.Message(code=code, uri=base + path + (f"?{query}" if query else ""), payload=payload, **kw)
            resp = await asyncio.wait_for(ctx.request(msg).response, 10)
            out.append((f"{code} {path}", resp.code))
        await ctx.shutdown()
        return out

    results = asyncio.run(probe())
    for what, code in results:
        assert int(code) >> 5 == 4, (what, code)  # a 4.xx, never 5.xx or success
    # and the endpoint still answers properly
    assert read(leshan, "lw-1", "3/0/2", "TEXT")["value"] == "lw-1"
    assert json.dumps(clients(leshan)["lw-1"])  # still registered
