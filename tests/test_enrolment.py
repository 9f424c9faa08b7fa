"""Enrolment in the field: meters started before their gateway can be reached, then reaching it
through a link that damages its answers, keep trying, each on its own, until they are enrolled; a
meter the gateway refuses (a certificate from another CA) keeps trying, is reported, and never stops
the others. Before the fix the first failed enrolment made `gridkey fleet` exit for every meter.

The damage is real: a UDP proxy between the meters and a real `gridkey serve` flips a bit in 30 %
of the datagrams the gateway sends (half of them in the last 80 bytes, where certificates and
signatures are), so answers fail to decode, carry a gateway certificate that no longer verifies,
or never complete.
"""

from __future__ import annotations

import socket

from udp_proxy import PASSTHROUGH, Faults, UdpProxy

from gridkey.datadir import DataDir
from gridkey.meter.fleet import Fleet, Provisioned
from helpers import LoopThread, SidecarProc, free_port, wait_for

METERS = ["en-1", "en-2", "en-3", "en-4"]


def test_a_fleet_enrols_through_an_unreachable_then_damaging_link_and_one_refusal_stops_no_one(tmp_path):
    sc = SidecarProc(tmp_path / "sc")
    sc.data.init()  # the CA exists before the gateway runs: meters are provisioned at the factory
    port = free_port(socket.SOCK_DGRAM)  # where the meters look for their gateway: nothing there yet
    foreign = DataDir(tmp_path / "other-ca")
    foreign.init()
    idents = [Provisioned(m, *sc.data.issue_identity(m, "meter", "GK1")) for m in METERS]
    idents.append(Provisioned("en-stranger", *foreign.issue_identity("en-stranger", "meter", "GK1")))
    loop = LoopThread()
    fleet = Fleet(
        idents,
        ca_cert=sc.data.local_ca().certificate,
        server=f"coap://127.0.0.1:{port}",
        resync_s=1.0,
        enrol_backoff_s=(0.2, 2.0),  # the field's 0.5-30 s, compressed for a test
    )
    proxy = UdpProxy(("127.0.0.1", sc.coap_port), s2c=Faults(tamper=0.3), seed=11, port=port)
    try:
        loop.run(fleet.start(wait=False))

        def status() -> dict[str, dict]:
            return loop.call(lambda: {a.meter_id: a.status() for a in fleet.agents})

        def all_failed_once() -> bool:
            return all(s["enrol_attempts"] >= 2 and s["enrol_error"] for s in status().values())

        try:
            wait_for("every meter failed to reach its gateway and tries again", all_failed_once, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {status()}") from None
        assert not any(s["enrolled"] for s in status().values())

        sc.start()
        proxy.start()  # the gateway is there, behind a link that damages what it says
        wait_for("the four meters enrolled", lambda: all(status()[m]["enrolled"] for m in METERS), 90)
        assert proxy.snapshot().get("s2c.tamper", 0) > 0
        stranger = status()["en-stranger"]
        assert not stranger["enrolled"] and stranger["enrol_error"], stranger
        assert [a.meter_id for a in loop.call(fleet.enrolling)] == ["en-stranger"]
        assert "en-stranger" not in {m["meter_id"] for m in sc.api("GET", "/v1/meters")}

        # and they work: once the link heals, a group of the four negotiates its first key
        proxy.configure(s2c=PASSTHROUGH)
        sc.api("POST", "/v1/groups", json={"group_id": "field", "members": METERS})

        def keys() -> set:
            return {(g.get("epoch"), g.get("key_id")) for g in (status()[m]["groups"].get("field", {}) for m in METERS)}

        wait_for("one key for the four", lambda: len(k := keys()) == 1 and next(iter(k))[0] == 1, 60)
        assert {m["meter_id"] for m in sc.api("GET", "/v1/meters") if m["role"] == "meter"} == set(METERS)
    finally:
        loop.run(fleet.stop())
        loop.close()
        proxy.stop()
        sc.stop()
