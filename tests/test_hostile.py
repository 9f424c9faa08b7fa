"""Group rekeys over a hostile network: a Dolev–Yao proxy sits between real meter agents and the sidecar.

In each scenario five real meter agents reach a real ``gridkey serve`` only through
:class:`udp_proxy.UdpProxy`, which drops, duplicates, delays (reorders), tampers with, replays
(across clients) and forges CoAP datagrams in both directions. Enrolment and the group's first
epoch happen before the attack starts (a meter that cannot enrol is not a protocol participant
yet); then manual rekeys run one after the other under attack, each waiting for the group's epoch
to advance; then the attack stops and one more rekey must bring every meter back.

The scenarios are independent (own sidecar, proxy and fleet) and run concurrently, started by a
module-scoped fixture, so the file fits its time budget; the tests then check what was recorded:

- **agreement** (DESIGN.md §6, "no attack from the Dolev–Yao list makes any honest member accept a
  key the others do not hold"): for every epoch, every meter that reached it reports the same key
  id, that key id is the one the gateway committed for the epoch, the meter is in that epoch's
  roster, and no meter holds a key for an epoch the gateway never committed;
- **one key per epoch**: no epoch number appears twice in ``/v1/groups/<g>/epochs`` (and the
  committed epochs are contiguous);
- **the service survives**: the sidecar process is alive, ``/healthz`` answers and the audit chain
  verifies;
- **healing**: after the attack one rekey brings every meter back into the group's newest epoch;
- **liveness under attack**: every rekey commits a new epoch within a generous timeout (sessions
  may abort and restart, members may be excluded and rejoin) - required in both scenarios;
- **the attack happened**: the proxy's drop / tamper / replay / inject counters are non-zero (in
  both directions in the moderate scenario), so the tests cannot pass vacuously.

Fault rates. The "moderate" profile uses 2 % loss, every other attack at higher rates and a low
client-to-server tamper rate (a tampered round message is, for liveness, a lost one until the
agent's stall check re-sends it), with a 6 s session deadline. The "heavy loss" profile has 10 %
loss each way, fewer active attacks, two rekeys and the gateway's defaults: a 10 s deadline that
doubles on every restart of the same epoch (up to 60 s). With a fixed 10 s deadline such a session
often missed it again and again (see ``LIVENESS_NOTE``); with the doubling, rekeys took 18-26 s,
56-58 s when the first attempt timed out (six rekeys while tuning); under the full suite's load a
rekey once needed a fourth attempt (> 90 s), so the per-rekey limit covers four: 150 s.

Two targeted forgeries run beside the scenarios: ``test_forged_forbidden_does_not_disable_a_meter``
(a 4.03 with a token read off the wire) guards the fix of an agent bug this file found, and
``test_spoofed_message_ids_do_not_cut_a_meter_off`` (requests spoofed from a meter's address with its
next message IDs) guards the fix of a denial of service the random replays can also trigger (the
link now re-opens on a timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from udp_proxy import PASSTHROUGH, Faults, UdpProxy

from helpers import FleetRunner, SidecarProc, wait_for

pytestmark = pytest.mark.xdist_group("hostile")  # one worker for the module under --dist loadgroup

METERS = [f"hm-{i}" for i in range(1, 6)]
GROUP = "hostile"
HEAL_TIMEOUT_S = 30.0
FLEET_CALL_S = 20.0  # bound on any call into the fleet's event loop
SCENARIO_BUDGET_S = 150.0  # hard stop for a whole scenario thread

LIVENESS_NOTE = (
    "Why lossy links are slow: with 8-10% loss each way (plus a few % tamper) a rekey of 5 meters takes "
    "tens of seconds: aiocoap serialises each meter's exchanges (NSTART=1), one lost datagram costs 2-3 s "
    "(ACK_TIMEOUT) with exponential backoff, the agent's catch-up GETs share that queue with its round "
    "POSTs, a round POST refused after in-transit corruption is only re-sent by the stall check, and the "
    "session deadline covers all three rounds - hence the deadline doubling on every restart."
)

WATCHDOG_BUG = (
    "product bug: MeterAgent._watchdog has no exception handling; a GET /session or /data answer whose "
    "body is not the expected CBOR (a tampered or forged 2.05 - plain CoAP is unauthenticated) raises "
    "CBORDecodeError/TypeError out of catch_up()/_fetch_data(), the task dies for good, and an agent whose "
    "observation has also lapsed never catches up again (gridkey/meter/agent.py)."
)


@dataclass
class Scenario:
    """One hostile run: its configuration and everything recorded for the tests."""

    name: str
    c2s: Faults
    s2c: Faults
    rekeys: int
    seed: int
    session_timeout_ms: int = 10_000  # the gateway's default deadline for a whole negotiation
    rekey_timeout_s: float = 45.0  # per rekey under attack: several aborted and restarted sessions fit
    per_direction: bool = True  # every attack in each direction (else: in at least one direction)
    rekey_s: list[float] = field(default_factory=list)
    liveness_error: str | None = None
    heal_error: str | None = None
    error: BaseException | None = None
    counters: dict[str, int] = field(default_factory=dict)
    epochs: list[dict] = field(default_factory=list)
    events: list[tuple[str, str, dict]] = field(default_factory=list)
    alive: bool = False
    healthz: int = 0
    audit: dict[str, Any] = field(default_factory=dict)
    fleet_status: dict[str, dict] = field(default_factory=dict)
    aborts: list[dict] = field(default_factory=list)
    log_tail: str = ""
    behind: dict[str, Any] = field(default_factory=dict)  # diagnostics of agents that did not heal
    recorded: bool = False  # everything the tests check was collected (teardown may still run)
    phase: str = "not started"
    fleet_loop_lag_s: float = 0.0
    teardown_error: str | None = None
    thread: threading.Thread | None = None
    deadline: float = 0.0

    def summary(self) -> str:
        """One line for the log: rekey durations, agent events, aborted sessions, attack counters."""
        kinds: dict[str, int] = defaultdict(int)
        for _, kind, _ in self.events:
            kinds[kind] += 1
        reasons = [
            (a["details"].get("epoch"), a["details"].get("reason"), a["details"].get("excluded")) for a in self.aborts
        ]
        revoked = sorted(m for m, st in self.fleet_status.items() if st.get("revoked"))
        return (
            f"[{self.name}] rekey seconds {self.rekey_s}; agent events {dict(kinds)}; aborts {reasons};"
            f" agents that believe they are revoked {revoked}; fleet loop max lag {self.fleet_loop_lag_s} s;"
            f" phase {self.phase}; teardown error {self.teardown_error};"
            f" proxy counters {dict(sorted(self.counters.items()))}"
        )

    def check(self) -> None:
        """Re-raise a crash of the scenario thread itself (setup failures, bugs in the rig)."""
        if self.error is not None:
            raise AssertionError(f"scenario {self.name} crashed: {self.error!r}\n{self.log_tail}") from self.error


SCENARIOS = [
    Scenario(
        "moderate",
        c2s=Faults(drop=0.02, duplicate=0.05, delay=0.10, tamper=0.008, replay=0.03, inject_per_s=1.5),
        s2c=Faults(drop=0.02, duplicate=0.05, delay=0.10, tamper=0.02, replay=0.03, inject_per_s=1.5),
        rekeys=5,
        seed=7,
        session_timeout_ms=6000,  # light loss: a session either finishes in ~3 s or has lost a message for good
    ),
    Scenario(
        "heavy-loss",
        c2s=Faults(drop=0.10, duplicate=0.05, delay=0.10, tamper=0.005, replay=0.05, inject_per_s=1.0),
        s2c=Faults(drop=0.10, duplicate=0.05, delay=0.10, tamper=0.03, replay=0.05, inject_per_s=1.0),
        rekeys=2,
        seed=11,
        rekey_timeout_s=150.0,  # four attempts at the doubling deadlines take 10 + 20 + 40 + 60 = 130 s
        per_direction=False,  # one short rekey: a 0.5 % c2s tamper rate may not fire
    ),
]


def inject_paths(group_id: str) -> list[tuple[str, ...]]:
    """The real resources an attacker would aim forged requests at."""
    paths: list[tuple[str, ...]] = [("gk", "meters"), ("gk", "gateway")]
    for tail in ("rounds", "rounds", "rounds", "rejoin", "data", "session", "certs"):
        paths.append(("gk", "groups", group_id, tail))
    paths += [("gk", "meters", m, "groups", group_id) for m in METERS[:2]]
    return paths


def attack_shortfall(counters: dict[str, int], per_direction: bool) -> list[str]:
    """Attacks the proxy has not carried out yet: drop/tamper/replay/inject, per direction or in total."""
    missing = []
    for action in ("drop", "tamper", "replay", "inject"):
        got = [counters.get(f"{d}.{action}", 0) for d in ("c2s", "s2c")]
        if (min(got) if per_direction else sum(got)) == 0:
            missing.append(action)
    return missing


def latest_epochs(events: list[tuple[str, str, dict]]) -> dict[str, int]:
    """Each meter's newest epoch, from the agents' own "epoch" events (no call into the fleet's loop)."""
    out = dict.fromkeys(METERS, 0)
    for meter, kind, info in list(events):
        if kind == "epoch" and info["group_id"] == GROUP:
            out[meter] = max(out[meter], info["epoch"])
    return out


async def agent_diagnostics(fleet: FleetRunner, meters: list[str]) -> dict[str, Any]:
    """Why an agent is behind: its recent errors and drops, and which of its tasks have died."""
    out: dict[str, Any] = {}
    for agent in fleet.fleet.agents if fleet.fleet else []:
        if agent.meter_id in meters:
            dead = {
                t.get_name(): repr(t.exception()) if not t.cancelled() and t.exception() else "cancelled/finished"
                for t in agent._tasks
                if t.done()
            }
            st = agent.status()
            out[agent.meter_id] = {"errors": st["errors"], "drops": st["drops"], "dead tasks": dead}
    return out


async def _lag_probe(s: Scenario) -> None:
    """Record how late the fleet's event loop wakes up (a blocked agent would show here)."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.1)
        s.fleet_loop_lag_s = max(s.fleet_loop_lag_s, round(loop.time() - t - 0.1, 3))


def run_scenario(s: Scenario, workdir: Path) -> None:
    """Run one scenario end to end and record its results in ``s`` (never raises).

    Calls into the fleet's event loop are bounded (``FLEET_CALL_S``), so an unresponsive agent
    shows up as a recorded error instead of a hang; ``s.phase`` says how far the run got.
    """
    sidecar = SidecarProc(workdir / "sc", session_timeout_ms=s.session_timeout_ms, name=f"sidecar-{s.name}")
    proxy: UdpProxy | None = None
    fleet: FleetRunner | None = None
    probe: concurrent.futures.Future | None = None
    try:
        s.phase = "setup"
        sidecar.start()
        proxy = UdpProxy(("127.0.0.1", sidecar.coap_port), seed=s.seed, inject_paths=inject_paths(GROUP)).start()
        fleet = FleetRunner(sidecar, METERS, server=f"coap://127.0.0.1:{proxy.port}").start()
        probe = asyncio.run_coroutine_threadsafe(_lag_probe(s), fleet.loop.loop)
        sidecar.api("POST", "/v1/groups", json={"group_id": GROUP, "members": METERS})
        wait_for("epoch 1 on every meter", lambda: min(latest_epochs(fleet.events).values()) >= 1)

        s.phase = "attack"
        proxy.configure(c2s=s.c2s, s2c=s.s2c)
        for i in range(s.rekeys):
            target = sidecar.group(GROUP)["epoch"] + 1
            t0 = time.monotonic()
            sidecar.api("POST", f"/v1/groups/{GROUP}/rekey")
            try:
                wait_for(
                    f"rekey {i + 1} (epoch {target})",
                    lambda t=target: sidecar.group(GROUP)["epoch"] >= t,
                    s.rekey_timeout_s,
                    0.1,
                )
            except AssertionError as exc:
                s.liveness_error = f"{exc}; group: {sidecar.group(GROUP)}"
                break
            s.rekey_s.append(round(time.monotonic() - t0, 1))
        # A quick run may not have drawn every attack yet: keep attacking the agents' background
        # traffic (catch-up polls, observations) for a little while until it has.
        with contextlib.suppress(AssertionError):
            wait_for("every kind of attack", lambda: not attack_shortfall(proxy.snapshot(), s.per_direction), 20.0)
        s.counters = proxy.snapshot()

        # The attack stops; one more rekey must take every excluded meter back.
        s.phase = "heal"
        proxy.configure(c2s=PASSTHROUGH, s2c=PASSTHROUGH)
        time.sleep(1.2)  # delayed and replayed datagrams drain
        sidecar.api("POST", f"/v1/groups/{GROUP}/rekey")

        def healed() -> bool:
            g = sidecar.group(GROUP)
            if g["session"]["state"] != "committed" or sorted(g["epoch_members"]) != METERS:
                return False
            return set(latest_epochs(fleet.events).values()) == {g["epoch"]}

        try:
            wait_for("every meter back in the group after the attack", healed, HEAL_TIMEOUT_S, 0.2)
        except AssertionError as exc:
            behind = [m for m, e in latest_epochs(fleet.events).items() if e != sidecar.group(GROUP)["epoch"]]
            s.behind = fleet.loop.run(agent_diagnostics(fleet, behind), FLEET_CALL_S)
            meters = latest_epochs(fleet.events)
            s.heal_error = f"{exc}; group: {sidecar.group(GROUP)}; meters: {meters}; agents behind: {s.behind}"

        s.phase = "collect"
        s.epochs = sidecar.api("GET", f"/v1/groups/{GROUP}/epochs", params={"limit": 1000})
        s.events = list(fleet.events)
        s.alive = sidecar.proc is not None and sidecar.proc.poll() is None
        s.healthz = sidecar.http.get("/healthz").status_code
        s.audit = sidecar.api("GET", "/v1/audit/verify")
        s.aborts = [
            a for a in sidecar.api("GET", "/v1/audit", params={"limit": 1000}) if a["action"] == "session.abort"
        ]
        agents = fleet.fleet.agents if fleet.fleet else []

        async def statuses() -> dict[str, dict]:
            return {a.meter_id: a.status() for a in agents}

        s.fleet_status = fleet.loop.run(statuses(), FLEET_CALL_S)
        s.recorded = True
    except BaseException as exc:
        s.error = exc
    finally:
        s.phase = "teardown"
        s.log_tail = sidecar.tail(30)
        if probe is not None:
            probe.cancel()
        if fleet is not None:
            try:
                if fleet.fleet is not None:
                    fleet.loop.run(fleet.fleet.stop(), FLEET_CALL_S)
            except BaseException as exc:  # an agent that does not stop is worth reporting, not hanging on
                s.teardown_error = repr(exc)
            fleet.loop.close()
        if proxy is not None:
            proxy.stop()
        sidecar.stop()
        s.phase = "done"


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scenario]]:
    """Start every scenario concurrently (each in its own thread, with its own processes).

    Tests call :func:`finished` to wait for theirs, so a test that does not need the results (the
    targeted forgery) runs while the scenarios do.
    """
    root = tmp_path_factory.mktemp("hostile")
    deadline = time.monotonic() + SCENARIO_BUDGET_S
    threads = []
    for s in SCENARIOS:
        s.deadline = deadline
        s.thread = threading.Thread(target=run_scenario, args=(s, root / s.name), name=f"hostile-{s.name}", daemon=True)
        s.thread.start()
        threads.append(s.thread)
    yield {s.name: s for s in SCENARIOS}
    for t in threads:  # let every scenario tear its processes down (bounded: fleet calls time out)
        t.join(max(1.0, deadline + 60 - time.monotonic()))


def finished(scenarios: dict[str, Scenario], name: str) -> Scenario:
    """Wait for a scenario to end (once: its summary is printed then) and re-raise a crash of its thread."""
    s = scenarios[name]
    if s.thread is not None:
        while s.thread.is_alive() and not s.recorded and time.monotonic() < s.deadline:
            s.thread.join(0.2)
        if not s.recorded and s.error is None:
            s.error = TimeoutError(f"scenario {s.name} stuck in phase {s.phase!r} after {SCENARIO_BUDGET_S} s")
        s.thread = None
        print(s.summary())
    s.check()
    return s


def test_forged_forbidden_does_not_disable_a_meter(tmp_path: Path, scenarios: dict[str, Scenario]) -> None:
    """Two forged NON 4.03 datagrams (CoAP codes and tokens are not protected without DTLS/OSCORE;
    the tokens were read off the wire) must not make a meter give up: it keeps taking part in its
    group, still joins a group created for it afterwards, and does not end up calling itself
    revoked. (Regression test: before commit 3d4a186 the agent stopped discovering groups for good.
    It requests ``scenarios`` only to run while they do.)"""
    sidecar = SidecarProc(tmp_path / "sc").start()
    proxy = UdpProxy(("127.0.0.1", sidecar.coap_port), seed=3).start()
    fleet: FleetRunner | None = None
    try:
        fleet = FleetRunner(sidecar, ["fm-1", "fm-2"], server=f"coap://127.0.0.1:{proxy.port}").start()
        sidecar.api("POST", "/v1/groups", json={"group_id": "g1", "members": ["fm-1", "fm-2"]})
        fleet.wait_epoch("g1", 1, ["fm-1", "fm-2"])
        targets = [(c, t, p) for c, t, p in proxy.observations() if p[:3] == ("gk", "meters", "fm-1")]
        assert len(targets) == 2, proxy.observations()  # the meter resource and its g1 inbox
        for i, (client, token, _path) in enumerate(targets):
            forged = aiocoap.Message(code=Code.FORBIDDEN, payload=b"forged by the proxy")
            forged.mtype, forged.mid, forged.token = Type.NON, 4242 + i, token
            proxy.send_to_client(client, forged.encode())
        wait_for("the forgeries to land", lambda: any(k == "revoked" for _, k, _ in fleet.events), 5.0)
        # the existing group still works ...
        sidecar.api("POST", "/v1/groups/g1/rekey")
        fleet.wait_epoch("g1", 2, ["fm-1", "fm-2"])
        # ... and a new group is still discovered and negotiated
        sidecar.api("POST", "/v1/groups", json={"group_id": "g2", "members": ["fm-1", "fm-2"]})
        fleet.wait_epoch("g2", 1, ["fm-1", "fm-2"])
        wait_for("fm-1 to stop believing it is revoked", lambda: not fleet.status()["fm-1"]["revoked"], 10.0)
    finally:
        if fleet is not None:
            fleet.stop()
        proxy.stop()
        sidecar.stop()


def test_spoofed_message_ids_do_not_cut_a_meter_off(tmp_path: Path, scenarios: dict[str, Scenario]) -> None:
    """Thirty spoofed CON requests from a meter's address, carrying the meter's next message IDs, must
    not cut the meter off. Without DTLS the server deduplicates by (address, message ID), so it answers
    the meter's real requests from the poisoned cache with the wrong token and aiocoap's one-exchange
    queue stalls; the link detects the timeout and re-opens (new port, new random IDs). The meter may
    miss the rekey that the attack overlapped (the deadline excludes it) but must hold the group's
    newest key again within a minute. (Runs while the scenarios do.)"""
    sidecar = SidecarProc(tmp_path / "sc").start()
    proxy = UdpProxy(("127.0.0.1", sidecar.coap_port), seed=5).start()
    fleet: FleetRunner | None = None
    try:
        fleet = FleetRunner(sidecar, ["sm-1", "sm-2"], server=f"coap://127.0.0.1:{proxy.port}").start()
        sidecar.api("POST", "/v1/groups", json={"group_id": "s1", "members": ["sm-1", "sm-2"]})
        fleet.wait_epoch("s1", 1, ["sm-1", "sm-2"])
        client = next(c for c, _, p in proxy.observations() if p == ("gk", "meters", "sm-1"))
        last = proxy.last_mids()[client]
        for k in range(1, 31):
            spoofed = aiocoap.Message(code=Code.GET, uri_path=("gk", "gateway"))
            spoofed.mtype, spoofed.mid, spoofed.token = Type.CON, (last + k) & 0xFFFF, b"\x5a\x5a"
            proxy.send_as_client(client, spoofed.encode())
        time.sleep(0.5)
        sidecar.api("POST", "/v1/groups/s1/rekey")

        def back() -> dict | None:
            g = sidecar.group("s1")
            held = fleet.key_ids("s1", ["sm-1", "sm-2"])
            active = {m["meter_id"] for m in g["members"] if m["status"] == "active"}
            newest = (g["epoch"], g["key_id"])
            return g if g["epoch"] >= 2 and active == {"sm-1", "sm-2"} and set(held.values()) == {newest} else None

        t0 = time.monotonic()
        wait_for("sm-1 to hold the group's newest key again", back, 60)
        reopened = fleet.status()["sm-1"]["link_reopened"]
        print(f"sm-1 back after {time.monotonic() - t0:.1f} s; its link re-opened {reopened}x")
        assert reopened >= 1, "the attack never stalled the link: this test would prove nothing"
    finally:
        if fleet is not None:
            fleet.stop()
        proxy.stop()
        sidecar.stop()


NAMES = [s.name for s in SCENARIOS]


@pytest.mark.parametrize("name", NAMES)
def test_members_agree_with_the_gateway_on_every_epoch(scenarios: dict[str, Scenario], name: str) -> None:
    """No attack made any meter hold a key id for an epoch that differs from its peers' or the gateway's,
    or a key for an epoch the gateway never committed, or a key for an epoch whose roster it is not in."""
    s = finished(scenarios, name)
    committed = {e["epoch"]: e for e in s.epochs}
    reported: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for meter, kind, info in s.events:
        if kind == "epoch" and info["group_id"] == GROUP:
            reported[info["epoch"]][info["key_id"]].add(meter)
    assert len(reported) >= 2, f"meters reported too few epochs to mean anything: {dict(reported)}"
    for epoch, by_key in sorted(reported.items()):
        assert len(by_key) == 1, f"members disagree on epoch {epoch}: {dict(by_key)}"
        ((key_id, holders),) = by_key.items()
        assert epoch in committed, f"{sorted(holders)} hold a key for uncommitted epoch {epoch}"
        assert key_id == committed[epoch]["key_id"], f"epoch {epoch}: meters {key_id}, gateway {committed[epoch]}"
        outsiders = holders - set(committed[epoch]["members"])
        assert not outsiders, f"{sorted(outsiders)} hold epoch {epoch} without being in its roster"


@pytest.mark.parametrize("name", NAMES)
def test_one_key_id_per_epoch_and_contiguous_epochs(scenarios: dict[str, Scenario], name: str) -> None:
    """The gateway committed each epoch number once (one key id per epoch) and skipped none."""
    s = finished(scenarios, name)
    numbers = sorted(e["epoch"] for e in s.epochs)
    assert len(numbers) == len(set(numbers)), f"an epoch was committed twice: {numbers}"
    assert numbers == list(range(1, len(numbers) + 1)), f"epochs are not contiguous: {numbers}"


@pytest.mark.parametrize("name", NAMES)
def test_sidecar_survives_and_audit_chain_holds(scenarios: dict[str, Scenario], name: str) -> None:
    """The sidecar process outlived the attack, still answers /healthz, and its audit chain verifies."""
    s = finished(scenarios, name)
    assert s.alive, f"the sidecar died under attack:\n{s.log_tail}"
    assert s.healthz == 200
    assert s.audit.get("ok") is True, s.audit


@pytest.mark.parametrize("name", NAMES)
def test_the_group_heals_after_the_attack(scenarios: dict[str, Scenario], name: str) -> None:
    """Once the attack stops, one rekey brings every excluded meter back: all five meters are in the
    newest epoch's roster and hold it. (A crashed agent watchdog, a known cause of a miss, is reported
    as an expected failure with its diagnostics.)"""
    s = finished(scenarios, name)
    crashed = {m: d["dead tasks"] for m, d in s.behind.items() if any("Error" in v for v in d["dead tasks"].values())}
    if s.heal_error is not None and crashed:
        pytest.xfail(f"{WATCHDOG_BUG} Crashed here: {crashed}")
    assert s.heal_error is None, s.heal_error
    newest = max(s.epochs, key=lambda e: e["epoch"])
    assert sorted(newest["members"]) == METERS
    holders = {m for m, k, i in s.events if k == "epoch" and i["epoch"] == newest["epoch"]}
    assert holders == set(METERS)


@pytest.mark.parametrize("name", NAMES)
def test_rekeys_complete_under_attack(scenarios: dict[str, Scenario], name: str) -> None:
    """Liveness under attack: every rekey committed a new epoch within the scenario's timeout (sessions
    may abort and restart, members may be excluded and rejoin), in every scenario."""
    s = finished(scenarios, name)
    assert s.liveness_error is None, f"{s.liveness_error}\n{LIVENESS_NOTE}\n{s.log_tail}"
    assert len(s.rekey_s) == s.rekeys
    print(f"[{name}] rekey seconds under attack: {s.rekey_s}")


@pytest.mark.parametrize("name", NAMES)
def test_the_proxy_really_attacked(scenarios: dict[str, Scenario], name: str) -> None:
    """The proxy dropped, tampered with, replayed and injected datagrams (no vacuous pass): in each
    direction for the moderate scenario, in at least one direction for the short heavy-loss one."""
    s = finished(scenarios, name)
    c = s.counters
    for direction in ("c2s", "s2c"):
        assert c.get(f"{direction}.seen", 0) > 50, c
        assert c.get(f"{direction}.inject_error", 0) == 0, c
    assert not attack_shortfall(c, s.per_direction), c
