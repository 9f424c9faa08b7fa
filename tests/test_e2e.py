"""End to end: a real sidecar process and real meter agents over CoAP and over HTTP.

Join, leave, revoke and periodic rekeys; every member commits the same key id for every epoch;
a revoked or removed meter receives nothing afterwards and cannot read the next epoch's traffic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from gridkey.crypto.identity import cert_to_pem
from gridkey.protocol.errors import DecodeError, Rejected
from gridkey.protocol.messages import Commit, Mode, decode
from gridkey.protocol.policy import MemberPolicy
from helpers import (
    FleetRunner,
    TracebackLog,
    committed_session_problems,
    epoch_problems,
    store_query,
    unexpected_tracebacks,
    wait_for,
)

GROUP = "feeder-1"


@pytest.fixture(autouse=True)
def no_tracebacks(sidecar):
    """Every test here fails if its sidecar or any fleet in this process logged a traceback."""
    caught = TracebackLog()  # all threads: one test runs at a time in a worker
    yield
    caught.close()
    assert caught.tracebacks() == []
    assert unexpected_tracebacks(sidecar.log_path.read_text(errors="replace")) == [], sidecar.tail(60)


def run_lifecycle(sidecar, fleet: FleetRunner) -> None:
    m = fleet.ids
    first, late = m[:-1], m[-1]
    sidecar.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*first, "controller"]})
    k1 = fleet.wait_epoch(GROUP, 1, first)
    assert sidecar.group(GROUP)["key_id"] == k1

    # join
    sidecar.api("POST", f"/v1/groups/{GROUP}/members", json={"members": [late]})
    k2 = fleet.wait_epoch(GROUP, 2, m)
    assert k2 != k1

    # a command reaches everyone
    sidecar.api("POST", f"/v1/groups/{GROUP}/commands", json={"command": {"shed": 5}})
    wait_for("command 1 everywhere", lambda: all(s["commands_received"] == 1 for s in fleet.status().values()))

    # a reading: the gateway relays what it cannot read; the sidecar's controller (a member, so a
    # key holder) decrypted it, and the readings API joins the two views by the message digest
    sent = {"meter": m[0], "kWh": 0.42, "ts": 1}
    out = fleet.loop.run(fleet.agent(m[0]).send_reading(GROUP, sent))
    got = sidecar.api("GET", f"/v1/groups/{GROUP}/readings/{out['id']}", params={"wait": 5})
    assert got["value_status"] == "decrypted" and got["value"] == sent
    assert (got["sender"], got["epoch"], got["key_id"]) == (m[0], 2, k2)

    # leave
    leaver = m[1]
    sidecar.api("DELETE", f"/v1/groups/{GROUP}/members/{leaver}")
    stay = [x for x in m if x != leaver]
    k3 = fleet.wait_epoch(GROUP, 3, stay)
    assert fleet.key_ids(GROUP, [leaver])[leaver] == (2, k2)

    # revoke
    victim = m[2]
    sidecar.api("POST", f"/v1/meters/{victim}/revoke", json={"reason": "keyCompromise"})
    stay = [x for x in stay if x != victim]
    k4 = fleet.wait_epoch(GROUP, 4, stay)
    assert len({k1, k2, k3, k4}) == 4
    assert fleet.key_ids(GROUP, [victim])[victim] == (3, k3)

    # the revoked and the removed meter receive nothing after that
    sidecar.api("POST", f"/v1/groups/{GROUP}/commands", json={"command": {"shed": 0}})
    wait_for(
        "command 2 on the remaining members", lambda: all(fleet.status()[x]["commands_received"] == 2 for x in stay)
    )
    time.sleep(1.0)
    status = fleet.status()
    assert status[victim]["commands_received"] == 1
    assert status[leaver]["commands_received"] == 1

    # ... and cannot decrypt the new epoch's traffic with anything they hold
    writer = fleet.agent(stay[0])
    data = fleet.loop.call(lambda: writer.current_channel(GROUP).seal(b'{"kWh": 1.0}'))
    for outsider in (victim, leaver):
        agent = fleet.agent(outsider)
        channels = fleet.loop.call(lambda a=agent: list(a.groups[GROUP].channels.values()))
        assert channels, "the outsider held keys for earlier epochs"
        for ch in channels:
            with pytest.raises(Rejected):
                ch.open(data)
    reader = fleet.agent(stay[1])
    assert fleet.loop.call(lambda: reader.current_channel(GROUP).open(data)).plaintext == b'{"kWh": 1.0}'

    # the gateway refuses to serve the revoked meter at all
    r = sidecar.http.get(f"/v1/meters/{victim}/groups/{GROUP}/inbox")
    assert r.status_code == 403

    # periodic rekey
    sidecar.api("PATCH", f"/v1/groups/{GROUP}", json={"rekey_interval_s": 1})
    wait_for("two periodic rekeys", lambda: sidecar.group(GROUP)["epoch"] >= 6, timeout=20)
    sidecar.api("PATCH", f"/v1/groups/{GROUP}", json={"rekey_interval_s": 0})
    final = sidecar.group(GROUP)["epoch"]
    fleet.wait_epoch(GROUP, final, stay)
    epochs = sidecar.api("GET", f"/v1/groups/{GROUP}/epochs", params={"limit": 1000})
    assert any(e["trigger"] == "periodic" for e in epochs)

    # one key id per epoch: every key a meter established is the gateway's for that epoch, each epoch
    # has one committed session; and the audit chain holds
    assert epoch_problems(epochs, fleet.events, GROUP) == []
    assert committed_session_problems(store_query(sidecar)) == []
    assert sidecar.api("GET", "/v1/audit/verify")["ok"] is True


def test_lifecycle_over_coap(sidecar):
    fleet = FleetRunner(sidecar, [f"meter-{i}" for i in range(1, 6)]).start()
    try:
        run_lifecycle(sidecar, fleet)
        assert max(s["round_msg_max"] for s in fleet.status().values()) <= 200
        # aiocoap never had to correct a notification: one Message object shared by several observers
        # once broke CON retransmissions (KeyError). (No tracebacks either: the autouse fixture.)
        log = sidecar.log_path.read_text(errors="replace")
        assert "Message ID set on to-be-sent message" not in log, sidecar.tail(60)
    finally:
        fleet.stop()


def test_lifecycle_over_http(sidecar):
    fleet = FleetRunner(sidecar, [f"hmeter-{i}" for i in range(1, 6)], server=sidecar.http_url).start()
    try:
        run_lifecycle(sidecar, fleet)
    finally:
        fleet.stop()


def test_mixed_transports_share_one_key(sidecar):
    coap = FleetRunner(sidecar, ["c-1", "c-2"]).start()
    http = FleetRunner(sidecar, ["h-1", "h-2"], server=sidecar.http_url).start()
    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "mixed", "members": ["c-1", "c-2", "h-1", "h-2"]})
        assert coap.wait_epoch("mixed", 1, ["c-1", "c-2"]) == http.wait_epoch("mixed", 1, ["h-1", "h-2"])
    finally:
        coap.stop()
        http.stop()


def test_attested_mode_group(sidecar):
    """Meters provisioned for attested mode (an explicit opt-in) negotiate an attested group."""
    both = MemberPolicy(modes=frozenset(Mode))
    fleet = FleetRunner(sidecar, [f"a-{i}" for i in range(4)], policy=both).start()
    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "att", "members": fleet.ids, "mode": "attested"})
        fleet.wait_epoch("att", 1, fleet.ids)
        assert sidecar.group("att")["mode"] == "attested"
    finally:
        fleet.stop()


def test_meters_refuse_a_mode_they_were_not_provisioned_for(sidecar):
    """The mode downgrade: a gateway asks end-to-end meters for attested mode (where it could pick
    their neighbour values and learn the key). They refuse, say why, and hold no key."""
    fleet = FleetRunner(sidecar, [f"d-{i}" for i in range(3)]).start()
    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "down", "members": fleet.ids, "mode": "attested"})

        def refusals() -> set[str]:
            return {m for m, k, i in fleet.events if k == "start_refused" and i["reason"] == "mode_refused"}

        wait_for("every meter refused the attested Start", lambda: refusals() == set(fleet.ids), 20)
        assert all(e == 0 and k is None for e, k in fleet.key_ids("down").values())
        status = fleet.status()
        assert all(any("mode_refused" in e for e in status[m]["errors"]) for m in fleet.ids), status

        # the gateway's operators hear it too: each member's signed report, on the group and in events
        def reported() -> dict[str, str]:
            return {m["meter_id"]: m["refusal"]["detail"] for m in sidecar.group("down")["members"] if "refusal" in m}

        wait_for("the gateway recorded every refusal", lambda: set(reported()) == set(fleet.ids), 20)
        assert all(d.startswith("mode_refused: an attested Start") for d in reported().values()), reported()
        audit = sidecar.api("GET", "/v1/audit?limit=1000")
        refused = {e["actor"] for e in audit if e["action"] == "member.refused" and e["subject"] == "down"}
        assert refused == {f"meter:{m}" for m in fleet.ids}, audit
    finally:
        fleet.stop()


def test_data_that_overtakes_a_late_commit_is_read_once_the_key_arrives(sidecar):
    """A meter whose Commit is late (a lossy link) already sees readings under the new key: it
    keeps them and reads them when the Commit comes, instead of dropping them as an unknown key."""
    fleet = FleetRunner(sidecar, ["lc-1", "lc-2", "lc-3"]).start()
    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "late", "members": fleet.ids})
        fleet.wait_epoch("late", 1, fleet.ids)
        slow = fleet.agent("lc-3")
        feed, held = slow.feed, []

        async def feed_but_the_commit(group_id: str, data: bytes) -> None:
            try:
                msg = decode(data).msg
            except DecodeError:
                msg = None
            if isinstance(msg, Commit) and msg.epoch == 2:
                held.append(data)  # "lost on the way", for now
                return
            await feed(group_id, data)

        slow.feed = feed_but_the_commit
        sidecar.api("POST", "/v1/groups/late/rekey", json={})
        fleet.wait_epoch("late", 2, ["lc-1", "lc-2"])
        wait_for("lc-3 saw epoch 2's Commit and held it back", lambda: held, 20)
        assert fleet.key_ids("late", ["lc-3"])["lc-3"][0] == 1
        before = fleet.status()["lc-3"]["readings_received"]
        out = fleet.loop.run(fleet.agent("lc-1").send_reading("late", {"kWh": 7}))
        view = slow.groups["late"]
        wait_for("lc-3 fetched the reading", lambda: view.data_cursor >= out["id"], 20)
        assert fleet.status()["lc-3"]["readings_received"] == before  # no key for it yet

        fleet.loop.run(feed("late", held[0]))  # the Commit arrives after all
        assert fleet.key_ids("late", ["lc-3"])["lc-3"][0] == 2
        wait_for("lc-3 read the reading", lambda: fleet.status()["lc-3"]["readings_received"] == before + 1, 10)
        got = [i for m, k, i in fleet.events if m == "lc-3" and k == "reading" and i["epoch"] == 2]
        assert [(i["from"], i["value"]) for i in got] == [("lc-1", {"kWh": 7})]
    finally:
        fleet.stop()


def test_offline_member_is_excluded_and_rejoins(sidecar):
    fleet = FleetRunner(sidecar, ["o-1", "o-2", "o-3"]).start()
    try:
        # o-4 is enrolled but its agent is not running: the first session times out without it
        _, cert = sidecar.data.issue_identity("o-4", "meter", "GK1")
        sidecar.api("POST", "/v1/meters", json={"cert_pem": cert_to_pem(cert).decode()})
        sidecar.api("POST", "/v1/groups", json={"group_id": "off", "members": ["o-1", "o-2", "o-3", "o-4"]})
        fleet.wait_epoch("off", 1, fleet.ids, timeout=30)
        g = sidecar.group("off")
        assert g["epoch_members"] == ["o-1", "o-2", "o-3"]
        assert {m["meter_id"]: m["status"] for m in g["members"]}["o-4"] == "lagging"
        assert sidecar.api("GET", "/v1/groups/off/epochs")[0]["trigger"] == "restart:timeout"
        # when o-4 comes online (with a fresh certificate) it asks to rejoin and gets the next epoch
        late = FleetRunner(sidecar, ["o-4"]).start()
        try:
            key_id = late.wait_epoch("off", 2, ["o-4"], timeout=30)
            assert fleet.wait_epoch("off", 2, fleet.ids) == key_id
        finally:
            late.stop()
    finally:
        fleet.stop()


def test_gridkey_meter_and_fleet_commands(sidecar, tmp_path):
    """The CLI agents as users start them: separate processes, status files, clean exit."""
    status = tmp_path / "fleet.json"
    fleet = subprocess.Popen(
        [sys.executable, "-m", "gridkey.cli", "fleet", "--data", str(sidecar.data.path), "--count", "3",
         "--prefix", "cli-", "--server", sidecar.coap_url, "--status-file", str(status), "--resync", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def enrolled() -> bool:  # the status file lists meters still trying to enrol too
            meters = json.loads(status.read_text())["meters"] if status.exists() else []
            return len(meters) == 3 and all(m["enrolled"] for m in meters)

        wait_for("fleet enrolled", enrolled)
        sidecar.api("POST", "/v1/groups", json={"group_id": "cli", "members": ["cli-001", "cli-002", "cli-003"]})

        def committed():
            meters = json.loads(status.read_text())["meters"]
            return all(m["groups"].get("cli", {}).get("epoch") == 1 for m in meters)

        wait_for("cli fleet commits", committed)
    finally:
        fleet.terminate()
        _, err = fleet.communicate(timeout=20)
    assert fleet.returncode == 0, err
    assert "3/3 meters hold a group key" in err


def test_bundles_larger_than_a_block_go_block_wise(sidecar):
    """Twelve meters: the round-2 bundle (~1.8 KB) exceeds one 1024-byte CoAP block, so every member
    walks its blocks (MeterAgent's own Block2 loop against the server's own block cutting). A stock
    aiocoap client assembling with 64-byte blocks gets the same bytes, and a block past the end is a 4.00."""
    import aiocoap
    from aiocoap.numbers.codes import Code

    from helpers import LoopThread

    meters = [f"bw-{i}" for i in range(1, 13)]
    fleet = FleetRunner(sidecar, meters).start()
    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "big", "members": meters})
        fleet.wait_epoch("big", 1, meters)
        sidecar.api("POST", "/v1/groups/big/rekey")
        fleet.wait_epoch("big", 2, meters)
    finally:
        fleet.stop()

    url = f"{sidecar.coap_url}/gk/groups/big/session/bundle2"

    async def fetch() -> tuple[bytes, bytes, bytes, aiocoap.Message]:
        ctx = await aiocoap.Context.create_client_context()
        try:
            whole = (await ctx.request(aiocoap.Message(code=Code.GET, uri=url)).response).payload
            small = (await ctx.request(aiocoap.Message(code=Code.GET, uri=url, block2=(0, False, 2))).response).payload
            parts, num, more = [], 0, True
            while more:
                r = await ctx.request(
                    aiocoap.Message(code=Code.GET, uri=url, block2=(num, False, 2)), handle_blockwise=False
                ).response
                assert r.opt.block2.block_number == num and len(r.payload) <= 64
                parts.append(r.payload)
                more, num = r.opt.block2.more, num + 1
            past = await ctx.request(
                aiocoap.Message(code=Code.GET, uri=url, block2=(num + 5, False, 2)), handle_blockwise=False
            ).response
            return whole, small, b"".join(parts), past
        finally:
            await ctx.shutdown()

    loop = LoopThread()
    try:
        whole, small, walked, past = loop.run(fetch())
    finally:
        loop.close()
    assert len(whole) > 1024, "the bundle fits one block: this test would prove nothing"
    assert whole == small == walked
    assert past.code == Code.BAD_REQUEST


def test_a_list_that_grows_between_blocks_says_so_with_its_etag(sidecar):
    """``/gk/groups/{g}/data`` grows while a meter walks its blocks, and a second walk of the same URL
    from the same meter replaces aiocoap's one cached rendering mid-walk (seen under load in the
    bridge outage test: glued blocks decoded as garbage and killed a meter's observe loop). Each
    rendering carries its own ETag, so the first walk sees the change, and the meter's link refuses
    the mix (a LinkError, retried later) instead of decoding it."""
    import aiocoap
    from aiocoap.numbers.codes import Code

    meters = ["grow-1", "grow-2"]
    fleet = FleetRunner(sidecar, meters).start()
    url = f"{sidecar.coap_url}/gk/groups/grow/data?after=0"

    async def walks() -> tuple[aiocoap.Message, aiocoap.Message, aiocoap.Message]:
        agent = fleet.agent("grow-1")
        for i in range(8):
            assert await agent.send_reading("grow", {"kWh": i}) is not None
        ctx = await aiocoap.Context.create_client_context()

        async def block(num: int) -> aiocoap.Message:
            msg = aiocoap.Message(code=Code.GET, uri=url, block2=(num, False, 2))
            r = await ctx.request(msg, handle_blockwise=False).response
            assert r.code == Code.CONTENT, r
            return r

        try:
            a0 = await block(0)  # walk A starts
            assert await agent.send_reading("grow", {"kWh": 99}) is not None
            b0 = await block(0)  # walk B starts on the grown list
            a1 = await block(1)  # walk A goes on: this block is from B's rendering
            return a0, b0, a1
        finally:
            await ctx.shutdown()

    try:
        sidecar.api("POST", "/v1/groups", json={"group_id": "grow", "members": meters})
        fleet.wait_epoch("grow", 1, meters)
        a0, b0, a1 = fleet.loop.run(walks())
    finally:
        fleet.stop()
    assert a0.opt.block2.more and a0.opt.etag, "one block, or no ETag: this test would prove nothing"
    assert b0.opt.etag != a0.opt.etag, "two renderings of a grown list under one ETag"
    assert a1.opt.etag == b0.opt.etag, "block 1 does not say which rendering it belongs to"
