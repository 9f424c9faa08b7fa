"""A bridge loses nothing: a broker outage with 10,000 events, a kill -9 of the sidecar with a full
outbox, and a bounded outbox that follows its policy and says so.

The broker is really stopped (and started again on the same port, with persistence, so the test's
subscriber keeps its session and sees what arrives while it reconnects). What should arrive is
read from the gateway's own store: every event a bridge forwards has stable message ids
(``{gateway}:{event id}:{n}``), so the test can say exactly which ones are missing or repeated;
order is the bridge's queue order, which each MQTT 5 message carries as its ``seq`` user property
(the order the gateway published its events in: concurrent requests need not commit in id order).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import pytest
from test_bridges import bridge_file

from gridkey.bench.mosquitto import Broker
from gridkey.meter.links import LinkError
from helpers import (
    AIOCOAP_BACKLOG_TRACEBACKS,
    KNOWN_TRACEBACKS,
    FleetRunner,
    SidecarProc,
    unexpected_tracebacks,
    wait_for,
)

GROUP = "feeder-o"
METERS = [f"om-{i:02d}" for i in range(1, 11)]
FORWARDED = {"data.reading": 1, "epoch.committed": 2, "meter.revoked": 1, "member.removed": 1,
             "member.added": 1, "session.aborted": 1}  # fmt: skip


def expected_ids(sc: SidecarProc, after: int, forwarded: dict[str, int] = FORWARDED) -> list[str]:
    """The message ids a bridge must deliver for the store's events after ``after``."""
    prefix = sc.api("GET", "/v1/bridges")[0]["id_prefix"]
    db = sqlite3.connect(sc.data.path / "gridkey.db")
    try:
        rows = db.execute("SELECT id, kind FROM events WHERE id > ? ORDER BY id", (after,)).fetchall()
    finally:
        db.close()
    return [f"{prefix}:{eid}:{n}" for eid, kind in rows for n in range(forwarded.get(kind, 0))]


def arrival(sub) -> list[tuple[str, int]]:
    """(msg_id, seq) of every message the consumer got, in arrival order."""
    out = []
    for m in sub.snapshot():
        msg_id = json.loads(m.payload)["msg_id"]
        assert m.properties["msg_id"] == msg_id
        out.append((msg_id, int(m.properties["seq"])))
    return out


def ids(got: list[tuple[str, int]]) -> set[str]:
    return {i for i, _ in got}


def assert_delivered(got: list[tuple[str, int]], want: list[str]) -> dict:
    """Every wanted id arrived; a repeat always has its first copy's id and seq; first arrivals in seq order."""
    first: dict[str, int] = {}
    for msg_id, seq in got:
        if msg_id in first:
            assert first[msg_id] == seq, f"{msg_id} came again under another seq"
        else:
            first[msg_id] = seq
    missing = [i for i in want if i not in first]
    assert not missing, f"{len(missing)} lost, e.g. {missing[:5]}"
    wanted = set(want)
    order = [first[i] for i in first if i in wanted]
    assert order == sorted(order), "order per bridge not kept"
    return {"delivered": len(want), "duplicates": sum(i in wanted for i, _ in got) - len(wanted)}


def produce_readings(
    fleet: FleetRunner, per_meter: int, in_flight: int = 64, stop: threading.Event | None = None
) -> int:
    """About ``per_meter`` readings from every meter, ``in_flight`` at a time; how many the gateway took.

    A send that times out on a loaded machine is retried (a new reading, sealed again): what counts
    is what the gateway committed, which is what the bridge must deliver.
    """

    async def all_() -> int:
        sem = asyncio.Semaphore(in_flight)

        async def one(mid: str, i: int) -> int:
            async with sem:
                for _ in range(5):
                    if stop is not None and stop.is_set():
                        return 0
                    try:
                        return await fleet.agent(mid).send_reading(GROUP, {"kWh": i}) is not None
                    except LinkError:
                        continue
                return 0

        return sum(await asyncio.gather(*(one(m, i) for i in range(per_meter) for m in METERS)))

    return fleet.loop.run(all_(), timeout=900)


def wait_agreed(fleet: FleetRunner, epoch: int, timeout: float = 60.0) -> None:
    """Every meter holds one key of an epoch >= ``epoch``. Not ``wait_epoch``: on a loaded machine a
    stalled negotiation or a meter's rejoin can add an epoch, and which one we stop at is not the
    point here; the store says what the bridge must deliver."""

    def agreed() -> bool:
        ks = fleet.key_ids(GROUP, METERS)
        return min(e for e, _ in ks.values()) >= epoch and len(set(ks.values())) == 1

    wait_for(f"all meters agree on an epoch >= {epoch}", agreed, timeout)


def scalar(path, sql: str, *args) -> int:
    """One value from a SQLite file the sidecar writes (its store, or the bridges' outbox)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchone()[0]
    finally:
        db.close()


def readings_in_store(sc: SidecarProc, after: int) -> int:
    sql = "SELECT count(*) FROM events WHERE id > ? AND kind = 'data.reading'"
    return scalar(sc.data.path / "gridkey.db", sql, after)


def latest_event(sc: SidecarProc) -> int:
    return scalar(sc.data.path / "gridkey.db", "SELECT max(id) FROM events")


def cursor_of(sc: SidecarProc) -> int:
    return scalar(sc.data.path / "bridges.db", "SELECT cursor FROM queues WHERE bridge = 'uplink'")


def test_a_broker_outage_and_a_kill_9_lose_nothing(tmp_path):
    broker = Broker(tmp_path / "broker", "plain", persistence=True).start()
    sub = broker.subscriber("gridkey/#", session="cloud-consumer")
    conf = bridge_file(tmp_path / "b.toml", name="uplink", host="127.0.0.1", port=broker.port, mqtt="5",
                       reconnect_max_s=2, outbox={"max_messages": 50_000})  # fmt: skip
    # The production session timeout (10 s), not the suite's quick 4 s: right after 10,000 readings the
    # in-sidecar controller has answered rounds ~1.5 s late (its stall watchdog, not a notification,
    # found them), and with 4 s deadlines each late answer became exclusion -> rejoin -> a new session,
    # a rekey loop that starved the second phase. What is tested here is the bridge.
    sc = SidecarProc(
        tmp_path / "sc", controller=True, session_timeout_ms=10_000, extra_args=("--bridge", str(conf))
    ).start()
    fleet = FleetRunner(sc, METERS).start()
    try:
        wait_for("the bridge connected", lambda: sc.api("GET", "/v1/bridges")[0]["connected"], 20)
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        fleet.wait_epoch(GROUP, 1, METERS)
        wait_for("epoch 1 delivered", lambda: sc.api("GET", "/v1/bridges")[0]["counters"]["published"] >= 2, 20)
        start = cursor_of(sc)

        # 1. the broker goes away; 10,000 readings and a few rekeys go through the gateway meanwhile
        broker.stop()
        t0 = time.monotonic()
        produce_readings(fleet, 1000)
        for e in range(2, 5):
            sc.api("POST", f"/v1/groups/{GROUP}/rekey")
            wait_agreed(fleet, e)
        produced_s = time.monotonic() - t0
        readings = readings_in_store(sc, start)
        assert readings >= 10_000
        print(f"produced {readings} readings and 3 rekeys in {produced_s:.1f} s")
        want = expected_ids(sc, start)
        # readings, epochs 2-4 (event + state each), and whatever else the store holds that a bridge
        # forwards (a negotiation aborted on a loaded machine, say): the store is the truth
        assert len(want) >= readings + 2 * 3
        st = wait_for("all of it queued", lambda: (s := sc.api("GET", "/v1/bridges")[0])["outbox"]["messages"]
                      >= len(want) and s, 60)  # fmt: skip
        assert not st["connected"] and st["counters"]["dropped_full"] == 0
        broker.start()
        t1 = time.monotonic()
        wait_for("the outbox drained", lambda: sc.api("GET", "/v1/bridges")[0]["outbox"]["messages"] == 0, 120)
        wait_for("everything at the consumer", lambda: set(want) <= ids(arrival(sub)), 60)
        first = assert_delivered(arrival(sub), want)
        print(f"outage: {len(want)} messages produced in {produced_s:.1f} s, drained in {time.monotonic() - t1:.1f} s,"
              f" {first['duplicates']} duplicates")  # fmt: skip

        # 2. with the broker gone again, kill -9 the sidecar while readings pour in (>= 1,000 queued):
        # events committed in the last moments, not yet in the outbox, must come out after the restart
        mark = max(int(i.split(":")[1]) for i in want)
        broker.stop()
        halt = threading.Event()
        producing = threading.Thread(target=produce_readings, args=(fleet, 300, 64, halt), daemon=True)
        producing.start()
        wait_for(">= 1,000 queued", lambda: sc.api("GET", "/v1/bridges")[0]["outbox"]["messages"] >= 1000, 120)
        sc.kill()  # SIGKILL mid-stream: no chance to flush anything
        halt.set()
        producing.join(120)
        assert not producing.is_alive()
        fleet.stop()
        fleet = None
        sc.start()
        queued = sc.api("GET", "/v1/bridges")[0]["outbox"]["messages"]
        assert queued >= 1000
        broker.start()
        want2 = expected_ids(sc, mark)
        assert len(want2) >= 1000
        wait_for(
            "the outbox drained after the crash",
            lambda: sc.api("GET", "/v1/bridges")[0]["outbox"]["messages"] == 0,
            120,
        )
        wait_for("everything at the consumer", lambda: set(want2) <= ids(arrival(sub)), 60)
        # the whole arrival list: events committed after phase 1's snapshot may have come out with it
        second = assert_delivered(arrival(sub), want2)
        print(f"crash: {queued} queued at the kill, {second['delivered']} delivered, {second['duplicates']} duplicates")
        # the kill -9 and the meters stopping mid-observation once hit aiocoap's pipe (aiocoap_workarounds);
        # the readings burst can still hit aiocoap's message-manager assertion (an open issue)
        log = sc.log_path.read_text(errors="replace")
        found = unexpected_tracebacks(log, KNOWN_TRACEBACKS + AIOCOAP_BACKLOG_TRACEBACKS)
        assert not found, "\n\n".join(found[:3])
    finally:
        if fleet is not None:
            fleet.stop()
        sc.stop()
        sub.close()
        broker.stop()


@pytest.mark.parametrize("policy", ["drop-oldest", "reject-new"])
def test_a_full_outbox_follows_its_policy_and_says_so(tmp_path, policy):
    broker = Broker(tmp_path / "broker", "plain", persistence=True).start()
    sub = broker.subscriber("gridkey/#", session=f"consumer-{policy}")
    conf = bridge_file(tmp_path / "b.toml", name="uplink", host="127.0.0.1", port=broker.port, mqtt="5",
                       reconnect_max_s=2, events=[], outbox={"max_messages": 50, "full": policy})  # fmt: skip
    sc = SidecarProc(tmp_path / "sc", controller=True, extra_args=("--bridge", str(conf))).start()
    fleet = FleetRunner(sc, METERS[:2]).start()
    try:
        wait_for("the bridge connected", lambda: sc.api("GET", "/v1/bridges")[0]["connected"], 20)
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS[:2], "controller"]})
        fleet.wait_epoch(GROUP, 1, METERS[:2])
        # the bridge has taken in everything so far (epoch 1's reported state among it) before the outage
        start = latest_event(sc)
        wait_for("the bridge caught up", lambda: cursor_of(sc) >= start, 20)
        broker.stop()

        async def burst():
            return [await fleet.agent(METERS[i % 2]).send_reading(GROUP, {"n": i}) for i in range(200)]

        fleet.loop.run(burst())
        want = expected_ids(sc, start, {"data.reading": 1})  # events = []: telemetry only
        assert len(want) == 200
        key = "dropped_full" if policy == "drop-oldest" else "rejected_full"
        st = wait_for(
            "the outbox full", lambda: (s := sc.api("GET", "/v1/bridges")[0])["counters"][key] == 150 and s, 30
        )
        assert st["outbox"]["messages"] == 50
        assert f'gridkey_bridge_{key}_total{{bridge="uplink"}} 150.0' in sc.http.get("/metrics").text
        broker.start()
        wait_for("drained", lambda: sc.api("GET", "/v1/bridges")[0]["outbox"]["messages"] == 0, 60)
        kept = want[-50:] if policy == "drop-oldest" else want[:50]
        wait_for("the kept 50 at the consumer", lambda: set(kept) <= ids(arrival(sub)), 30)
        time.sleep(0.5)
        after_start = {i for i in ids(arrival(sub)) if int(i.split(":")[1]) > start}
        assert after_start == set(kept)  # exactly those: the others were dropped or refused, and counted
    finally:
        fleet.stop()
        sc.stop()
        sub.close()
        broker.stop()
