"""The gateway service in-process: real SQLite store, real members, no transport.

Covers the policy the transports rely on: enrolment, membership changes and the rekeys they cause,
batching of joins, exclusion after a timeout, the audit chain (including tamper detection), the
inbox filter that shuts out revoked meters, and the relay's checks on group data.
"""

from __future__ import annotations

import sqlite3

import pytest

from gridkey.crypto import GK1
from gridkey.crypto.identity import cert_to_pem, read_crl
from gridkey.datadir import DataDir
from gridkey.gateway import Conflict, Forbidden, Gateway, GatewayConfig, Invalid, NotFound
from gridkey.gateway.trust import ms_to_dt
from gridkey.protocol.directory import KeyDirectory
from gridkey.protocol.events import Send
from gridkey.protocol.groupdata import GroupChannel
from gridkey.protocol.member import GroupMember, MemberIdentity
from gridkey.protocol.requests import MeterRequest
from gridkey.store import Store
from gridkey.transports.lwm2m.model import GroupMembershipProvider
from gridkey.transports.lwm2m.objects import GroupMembershipRes


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def env(tmp_path):
    dd = DataDir(tmp_path / "data")
    dd.init()
    store = Store(dd.db_url)
    store.migrate()
    clock = Clock()
    gw = Gateway(store, dd.trust(), GatewayConfig(session_timeout_ms=5000, join_window_ms=300), clock=clock)
    directory = KeyDirectory()
    coord = dd.trust().coordinator.signing_key.public_key
    members: dict[str, GroupMember] = {}
    keys = {}

    def meter(mid: str, enroll: bool = True) -> GroupMember:
        key, cert = dd.issue_identity(mid, "meter", "GK1")
        keys[mid] = (key, cert)
        if enroll:
            gw.enroll(cert_to_pem(cert), actor="test")
        directory.add(mid, key.public_key)
        directory.revocation = read_crl(gw.crl(), dd.trust().ca_cert, ms_to_dt(clock()))
        members[mid] = GroupMember(
            suite=GK1, me=MemberIdentity(mid, key), group_id="g", coordinator_keys=[coord], directory=directory
        )
        return members[mid]

    def pump(group: str = "g", online: set[str] | None = None) -> None:
        """Deliver every coordinator message to every (online) member until nothing new happens."""
        fed: set[tuple[str, bytes]] = set()
        while True:
            progressed = False
            for data in gw.session_messages(group):
                for mid, m in members.items():
                    if (online is not None and mid not in online) or (mid, data) in fed:
                        continue
                    fed.add((mid, data))
                    for ev in m.receive(data, clock()):
                        if isinstance(ev, Send):
                            gw.handle_member_message(group, ev.data)
                            progressed = True
            if not progressed:
                return

    return gw, dd, clock, meter, members, pump, store, keys


def test_group_lifecycle_and_audit(env):
    gw, _, clock, meter, members, pump, store, _ = env
    for m in ("a", "b", "c"):
        meter(m)
    gw.create_group("g", members=["a", "b", "c"], actor="test")
    pump()
    g = gw.get_group("g")
    assert g["epoch"] == 1 and {m.current.key_id.hex() for m in members.values()} == {g["key_id"]}

    meter("d")
    gw.add_members("g", ["d"], actor="test")
    assert gw.get_group("g")["session"]["state"] == "committed"  # join waits for the batching window
    clock.now += 301
    gw.tick()
    pump()
    assert gw.get_group("g")["epoch"] == 2
    assert members["d"].current.epoch == 2

    gw.remove_member("g", "b", actor="test")
    pump()
    g = gw.get_group("g")
    assert g["epoch"] == 3 and "b" not in g["epoch_members"]
    assert members["b"].current.epoch == 2

    result = gw.verify_audit()
    assert result.ok and result.entries >= 8
    # tampering with any stored audit entry is detected
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE audit SET actor = actor || 'x' WHERE seq = 2")
    bad = gw.verify_audit()
    assert not bad.ok and "entry 2 was modified" in bad.problem


def test_joins_within_the_window_share_one_rekey(env):
    gw, _, clock, meter, _, pump, _, _ = env
    for m in ("a", "b", "c", "d", "e"):
        meter(m)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    for m in ("c", "d", "e"):
        gw.add_members("g", [m], actor="test")
        clock.now += 50
    clock.now += 300
    gw.tick()
    pump()
    epochs = gw.list_epochs("g")
    assert [e["epoch"] for e in epochs] == [2, 1]
    assert epochs[0]["members"] == ["a", "b", "c", "d", "e"] and epochs[0]["trigger"] == "join"


def test_timeout_excludes_silent_members_then_rejoin(env):
    gw, _, clock, meter, members, pump, _, keys = env
    for m in ("a", "b", "c"):
        meter(m)
    gw.create_group("g", members=["a", "b", "c"], actor="test")
    pump(online={"a", "b"})
    clock.now += 5001
    gw.tick()  # deadline: abort, exclude c, restart epoch 1 without it
    retry = gw.get_group("g")["session"]
    assert retry["attempt"] == 1 and retry["deadline"] - retry["started_at"] == 10_000  # a restart gets twice as long
    pump(online={"a", "b"})
    g = gw.get_group("g")
    assert g["epoch"] == 1 and g["epoch_members"] == ["a", "b"]
    assert {m["meter_id"]: m["status"] for m in g["members"]}["c"] == "lagging"
    # c comes back with a signed rejoin request
    req = MeterRequest("rejoin", "c", clock(), group_id="g").sign(keys["c"][0])
    gw.rejoin_signed("g", req)
    clock.now += 301
    gw.tick()
    pump()
    assert gw.get_group("g")["epoch"] == 2 and members["c"].current.epoch == 2
    # a rejoin signed by somebody else is refused
    forged = MeterRequest("rejoin", "c", clock(), group_id="g").sign(keys["a"][0])
    with pytest.raises(Forbidden):
        gw.rejoin_signed("g", forged)


def test_revocation_shuts_the_meter_out(env):
    gw, _, _, meter, members, pump, _, keys = env
    for m in ("a", "b", "c"):
        meter(m)
    gw.create_group("g", members=["a", "b", "c"], actor="test")
    pump()
    old = GroupChannel(GK1, members["c"].current, "c")
    gw.revoke("c", reason="keyCompromise", actor="test")
    pump()
    assert gw.get_group("g")["epoch"] == 2
    assert gw.member_status("g", "c") == "revoked"
    with pytest.raises(Forbidden):
        gw.inbox("g", "c")
    # re-enrolling the revoked certificate, or its meter id with a new one, is refused
    with pytest.raises(Forbidden):
        gw.enroll(cert_to_pem(keys["c"][1]), actor="test")
    # a message sealed under the revoked meter's old epoch is no longer relayed
    with pytest.raises((Forbidden, Conflict)):
        gw.post_data("g", old.seal(b"still here?"))
    with pytest.raises(Invalid):
        gw.revoke("a", reason="because", actor="test")


def test_bad_requests_are_clear_errors(env):
    gw, _, _, meter, _, _, _, keys = env
    meter("a")
    meter("b")
    with pytest.raises(NotFound):
        gw.get_group("nope")
    with pytest.raises(Invalid):
        gw.create_group("bad id!", members=["a"], actor="test")
    with pytest.raises(NotFound):
        gw.create_group("g", members=["a", "ghost"], actor="test")
    gw.create_group("g", members=["a", "b"], actor="test")
    with pytest.raises(Conflict):
        gw.create_group("g", members=["a"], actor="test")
    with pytest.raises(Invalid):
        gw.handle_member_message("g", b"\xa0garbage")
    with pytest.raises(Invalid):
        gw.post_data("g", b"\x00")
    with pytest.raises(Invalid):
        gw.enroll(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", actor="test")
    # enrolment is idempotent, and one key cannot be enrolled under two ids
    assert gw.enroll(cert_to_pem(keys["a"][1]), actor="test")["meter_id"] == "a"
    with pytest.raises(Invalid):
        gw.enroll_signed(MeterRequest("enroll", "a", gw.clock(), cert_der=b"x").sign(keys["a"][0]))


def test_no_second_key_id_for_an_epoch(env):
    """The epochs primary key makes a second commit of the same epoch impossible."""
    gw, _, _, meter, _, pump, store, _ = env
    for m in ("a", "b"):
        meter(m)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    with pytest.raises(Exception, match=r"UNIQUE|unique|PRIMARY"), store.write() as conn:
        conn.exec_driver_sql("INSERT INTO epochs VALUES ('g', 1, x'0000000000000000', x'00', '[]', 'x', 0, 0, 0)")


def test_members_receive_keys_the_coordinator_never_sees(env):
    gw, _, _, meter, members, pump, store, _ = env
    for m in ("a", "b", "c"):
        meter(m)
    gw.create_group("g", members=["a", "b", "c"], actor="test")
    pump()
    keys = members["a"].current
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as db:
        blob = b"".join(
            bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
            for table in ("sessions", "session_messages", "session_broadcasts", "epochs", "events", "audit")
            for row in db.execute(f"SELECT * FROM {table}")
            for v in row
        )
    for secret in (keys.aead_key, keys.base_iv, keys.exporter_secret):
        assert secret not in blob


def test_restart_deadlines_double_up_to_the_cap():
    """Each restart for the same epoch doubles the deadline (lossy links), never beyond the cap, and
    a cap below the base deadline never shortens it."""
    c = GatewayConfig(session_timeout_ms=10_000, max_session_timeout_ms=60_000)
    assert [c.session_timeout(a) for a in range(6)] == [10_000, 20_000, 40_000, 60_000, 60_000, 60_000]
    assert c.session_timeout(10**6) == 60_000
    low = GatewayConfig(session_timeout_ms=10_000, max_session_timeout_ms=1_000)
    assert [low.session_timeout(a) for a in range(3)] == [10_000, 10_000, 10_000]


def _refusal(keys, mid: str, clock, **over) -> bytes:
    fields = {"group_id": "g", "epoch": 2, "reason": "mode_refused", "detail": "an attested Start; e2e only"}
    fields |= over
    return MeterRequest("refusal", mid, clock(), **fields).sign(keys[mid][0])


def test_a_member_s_signed_refusal_reaches_operators_until_it_commits_again(env):
    gw, _, clock, meter, _members, pump, _, keys = env
    for m in ("a", "b", "d"):
        meter(m)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    with pytest.raises(Conflict):  # no negotiation of epoch 2 has asked anyone in yet
        gw.report_refusal("g", _refusal(keys, "a", clock))
    gw.request_rekey("g", actor="test")  # epoch 2's Start is out; a refuses it
    report = _refusal(keys, "a", clock)
    seen = []
    gw.hub.subscribe(seen.append)
    out = gw.report_refusal("g", report)
    assert out == {"group_id": "g", "meter_id": "a", "epoch": 2, "reason": "mode_refused"}
    gw.report_refusal("g", _refusal(keys, "a", clock))  # a repeat is not news
    assert [(e.kind, e.body["reason"], e.body["epoch"]) for e in seen] == [("member.refused", "mode_refused", 2)]
    assert [e["action"] for e in gw.audit_entries()].count("member.refused") == 1
    by_id = {m["meter_id"]: m for m in gw.get_group("g")["members"]}
    assert by_id["a"]["refusal"]["detail"] == "mode_refused: an attested Start; e2e only"
    assert "refusal" not in by_id["b"]
    # LwM2M: the meter's endpoint says it refused (state failed); the gateway's names who refused
    for meter_id, text in (("a", "refused: mode_refused: "), (None, "a refused: mode_refused: ")):
        p = GroupMembershipProvider(gw, meter_id)
        values = p.read(p.instances()[0])
        assert values[GroupMembershipRes.LAST_ERROR].startswith(text)
    assert GroupMembershipProvider(gw, "a").read(0)[GroupMembershipRes.STATE] == "failed"
    assert GroupMembershipProvider(gw, "b").read(0)[GroupMembershipRes.STATE] == "negotiating"  # b goes on
    # an epoch a takes part in clears it, and the same signed report replayed later cannot set it back
    pump()
    assert gw.get_group("g")["epoch"] == 2
    assert all("refusal" not in m for m in gw.get_group("g")["members"])
    assert GroupMembershipProvider(gw, None).read(0)[GroupMembershipRes.LAST_ERROR] == ""
    with pytest.raises(Conflict):
        gw.report_refusal("g", report)
    gw.request_rekey("g", actor="test")  # epoch 3 is being negotiated: a report of it would count
    # hostile or broken reports are clear errors and change nothing
    bad = [
        (Invalid, _refusal(keys, "a", clock, reason="made_up")),
        (Invalid, _refusal(keys, "a", clock, reason="stale")),  # a drop, not a refusal
        (Invalid, _refusal(keys, "a", clock, detail="x" * 201)),
        (Invalid, _refusal(keys, "a", clock, detail="nul\x00byte")),  # PostgreSQL text cannot hold it
        (Invalid, _refusal(keys, "a", clock, epoch=2**63)),  # beyond a signed 64-bit column
        (Conflict, _refusal(keys, "a", clock, epoch=99)),  # a negotiation that never was
        (Invalid, _refusal(keys, "a", clock, epoch=None)),
        (Invalid, _refusal(keys, "a", clock, group_id="other")),
        (Invalid, MeterRequest("rejoin", "a", clock(), group_id="g", reason="mode_refused").sign(keys["a"][0])),
        (Forbidden, _refusal(keys, "d", clock)),  # not a member
        (Forbidden, MeterRequest("refusal", "a", clock(), "g", epoch=3, reason="wrong_role").sign(keys["b"][0])),
        (
            Forbidden,
            MeterRequest("refusal", "a", clock() - 600_000, "g", epoch=2, reason="wrong_role").sign(keys["a"][0]),
        ),
    ]
    for exc, req in bad:
        with pytest.raises(exc):
            gw.report_refusal("g", req)
    assert all("refusal" not in m for m in gw.get_group("g")["members"])


def test_the_keyless_rekey_limit_holds_across_replicas(env, tmp_path):
    """Two sidecars on one store (replicas): a keyless member asking each gets one rekey per interval."""
    gw, dd, clock, meter, _members, pump, store, keys = env
    for m in ("a", "b"):
        meter(m)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    replica = Gateway(store, dd.trust(), GatewayConfig(session_timeout_ms=5000, join_window_ms=300), clock=clock)
    rejoin = MeterRequest("rejoin", "a", clock(), group_id="g", epoch=0).sign(keys["a"][0])
    assert "rekey" not in gw.rejoin_signed("g", rejoin)
    clock.now += 301
    gw.tick()
    pump()
    assert gw.get_group("g")["epoch"] == 2
    again = MeterRequest("rejoin", "b", clock(), group_id="g", epoch=1).sign(keys["b"][0])
    assert replica.rejoin_signed("g", again)["rekey"] == "later"
    clock.now += gw.config.keyless_rekey_interval_ms
    late = MeterRequest("rejoin", "b", clock(), group_id="g", epoch=1).sign(keys["b"][0])
    assert "rekey" not in replica.rejoin_signed("g", late)


def test_a_cancelled_waiter_does_not_stop_the_batcher(env):
    """A CoAP client that goes away cancels its round message's future; the batcher thread must go
    on with the next messages (it died on set_result before, and with it every later round)."""
    import threading

    from gridkey.gateway.batcher import Batcher

    gw = env[0]
    real, gate = gw.handle_member_messages, threading.Event()

    def held_back(group_id, datas):  # the real handler, once the test has cancelled the first waiter
        gate.wait(10)
        return real(group_id, datas)

    gw.handle_member_messages = held_back
    batcher = Batcher(gw)
    try:
        first = batcher.submit("nogroup", b"\x00")
        assert first.cancel()
        gate.set()
        second = batcher.submit("nogroup", b"\x00")
        with pytest.raises(Invalid, match="malformed message"):  # answered: the thread lives on
            second.result(timeout=10)
    finally:
        batcher.close()


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("DELETE FROM audit WHERE seq = 3", "entry 3 is missing"),  # a middle entry removed
        ("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)", "truncated"),  # the tail cut off
        ("UPDATE audit SET prev_hash = zeroblob(32) WHERE seq = 4", "entry 4 does not link"),  # a broken link
        ("UPDATE audit SET details = '{}' WHERE seq = 2", "entry 2 was modified"),
    ],
)
def test_every_kind_of_audit_tampering_fails_verification_and_the_cli(env, tamper, problem):
    import subprocess
    import sys

    gw, dd, _clock, meter, _members, pump, store, _ = env
    for m in ("a", "b"):
        meter(m)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    assert gw.verify_audit().ok and gw.verify_audit().entries >= 5

    def cli() -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "gridkey.cli", "audit", "verify", "--data", str(dd.path)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    assert cli().returncode == 0
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as db:
        db.execute(tamper)
    bad = gw.verify_audit()
    assert not bad.ok and problem in bad.problem, bad
    out = cli()
    assert out.returncode != 0 and problem in out.stdout + out.stderr, out


def test_signed_requests_are_bounded_in_time(env):
    """Signed enrolment and rejoin requests carry their time: one from outside the allowed skew, or
    a captured one replayed after it, is refused (within it a replay is harmless: both are idempotent)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    gw, _, clock, meter, _members, pump, _, keys = env
    for m in ("a", "b"):
        meter(m)
    meter("late", enroll=False)
    gw.create_group("g", members=["a", "b"], actor="test")
    pump()
    skew = gw.config.max_request_skew_ms
    der = keys["late"][1].public_bytes(Encoding.DER)
    for ts in (clock() - skew - 1, clock() + skew + 1):
        with pytest.raises(Forbidden, match="clock skew"):
            gw.enroll_signed(MeterRequest("enroll", "late", ts, cert_der=der).sign(keys["late"][0]))
    captured = MeterRequest("rejoin", "a", clock(), group_id="g").sign(keys["a"][0])
    before = gw.get_group("g")
    assert gw.rejoin_signed("g", captured)["status"] == "active"
    assert gw.rejoin_signed("g", captured)["status"] == "active"  # a replay within the bound changes nothing
    assert gw.get_group("g") == before
    clock.now += skew + 1
    with pytest.raises(Forbidden, match="clock skew"):
        gw.rejoin_signed("g", captured)
    assert "late" not in {m["meter_id"] for m in gw.list_meters()}
