"""Dolev–Yao: tampering, injection, replay, rollback, impersonation, invalid points, malformed bytes.

Each test plays an attacker on the wire through the loopback hooks and checks two things: the bad
message is dropped (and counted) or, if it cannot be ignored, the session aborts; and no honest
member ever commits a key that the other honest members do not hold.
"""

import pytest

from gridkey.crypto import GK1, GK2, SeededRng
from gridkey.protocol import cbor
from gridkey.protocol.coordinator import CoordinatorSession
from gridkey.protocol.errors import AbortReason
from gridkey.protocol.events import Aborted, Dropped, KeyEstablished
from gridkey.protocol.loopback import Loopback
from gridkey.protocol.messages import Bundle, Mode, MsgType, Round1, Start, decode

SUITES = {"GK1": GK1, "GK2": GK2}
IDS = ["alice", "bob", "carol", "dave", "erin"]
NOW = 1_700_000_000_000


def msg_type(data: bytes) -> MsgType | None:
    try:
        return decode(data).msg.TYPE
    except Exception:
        return None


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos % len(b)] ^= 0x01
    return bytes(b)


def assert_no_split(result):
    """No two members hold different keys for the epoch; committed members match the coordinator."""
    ids = {k.key_id for k in result.keys.values()}
    assert len(ids) <= 1
    if result.keys:
        assert result.coordinator is not None and ids == {result.coordinator.key_id}


@pytest.fixture(params=list(SUITES))
def lb(request):
    return Loopback(SUITES[request.param], IDS, seed=request.param)


# --- tampering in flight is dropped and the genuine copy still gets through --------------------


@pytest.mark.parametrize("kind", [MsgType.ROUND1, MsgType.ROUND2, MsgType.CONFIRM])
@pytest.mark.parametrize("where", [-70, -5, 20, 40])  # signature bytes, payload bytes
def test_tampered_member_message_is_dropped(lb, kind, where):
    def hook(member, data):
        if member == "bob" and msg_type(data) == kind:
            return [flip(data, where), data]
        return [data]

    r = lb.run_epoch(to_coordinator=hook)
    assert r.agree
    assert sum(v for k, v in r.drops.items() if k.startswith("coordinator:")) == 1
    assert set(r.drops) <= {
        "coordinator:bad_signature",
        "coordinator:malformed",
        "coordinator:invalid_element",
    }


@pytest.mark.parametrize("kind", [MsgType.START, MsgType.BUNDLE, MsgType.COMMIT])
def test_tampered_coordinator_message_is_dropped(lb, kind):
    def hook(member, data):
        if member == "carol" and msg_type(data) == kind:
            return [flip(data, len(data) // 2), data]
        return [data]

    r = lb.run_epoch(to_member=hook)
    assert r.agree
    assert r.drops, "carol dropped nothing: the tampered copy was never judged"
    assert all(k.startswith("member:") for k in r.drops), r.drops


def test_tampered_z_inside_bundle_with_valid_coordinator_signature_aborts_e2e():
    """A malicious coordinator re-signs a bundle carrying a substituted z: members refuse the key."""
    lb = Loopback(GK1, IDS, seed=1, mode=Mode.E2E)
    mallory = GK1.generate_signing_key(SeededRng("mallory"))
    coord_key = lb.coordinator_key

    def hook(member, data):
        env = decode(data)
        if member == "alice" and isinstance(env.msg, Bundle) and env.msg.round == 1:
            items = list(env.msg.items)
            fake_z = GK1.group.encode(GK1.group.base_mult(12345))
            inner = decode(items[2]).msg
            items[2] = Round1(inner.sid, inner.epoch, inner.idx, fake_z).sign(mallory, lb.session.session_hash)
            return [Bundle(env.msg.sid, env.msg.epoch, 1, tuple(items)).sign(coord_key)]
        return [data]

    r = lb.run_epoch(to_member=hook)
    assert_no_split(r)
    assert not r.agree
    assert "alice" not in r.keys
    reasons = {m: res.reason for m, res in r.member_results.items() if isinstance(res, Aborted)}
    assert reasons  # somebody noticed
    assert set(reasons.values()) <= {
        AbortReason.BAD_PEER_SIGNATURE,
        AbortReason.TRANSCRIPT_MISMATCH,
        AbortReason.INVALID_BUNDLE,
        AbortReason.COORDINATOR_ABORT,
    }


def test_attested_mode_trusts_the_coordinator_as_documented():
    """In attested mode a member verifies one signature: it cannot tell a substituted z itself.

    This is the documented trade-off (docs/protocol.md §5). Alice accepts a coordinator-signed
    bundle with a substituted z and answers with a Round2 (an end-to-end member would abort). Here
    the coordinator itself is honest, so it refuses her Round2 (its signature covers a different
    round-1 hash) and the deadline excludes her; a malicious coordinator would not, which is why
    end-to-end is the default.
    """
    lb = Loopback(GK1, IDS, seed=2, mode=Mode.ATTESTED)
    coord_key = lb.coordinator_key
    sent_round2 = []

    def down(member, data):
        env = decode(data)
        if member == "alice" and isinstance(env.msg, Bundle) and env.msg.round == 1:
            items = list(env.msg.items)
            items[2] = GK1.group.encode(GK1.group.base_mult(999))
            return [Bundle(env.msg.sid, env.msg.epoch, 1, tuple(items)).sign(coord_key)]
        return [data]

    def up(member, data):
        if member == "alice" and msg_type(data) == MsgType.ROUND2:
            sent_round2.append(data)
        return [data]

    r = lb.run_epoch(to_member=down, to_coordinator=up)
    assert sent_round2  # alice did not notice
    assert r.drops["coordinator:bad_signature"] == 1
    assert isinstance(r.coordinator, Aborted) and r.coordinator.excluded == ("alice",)
    assert_no_split(r)


# --- injection, impersonation, non-members ------------------------------------------------------


def test_outsider_cannot_inject_round_messages(lb):
    outsider = lb.suite.generate_signing_key(SeededRng("outsider"))
    injected = []

    def hook(member, data):
        env = decode(data)
        if member == "dave" and env.msg.TYPE == MsgType.ROUND1:
            fake = Round1(env.msg.sid, env.msg.epoch, env.msg.idx, env.msg.z).sign(outsider, lb.session.session_hash)
            injected.append(fake)
            return [fake, data]
        return [data]

    r = lb.run_epoch(to_coordinator=hook)
    assert r.agree and injected
    assert r.drops["coordinator:non_member"] == 1


def test_member_cannot_impersonate_another_member(lb):
    """Bob signs a Round1 claiming Carol's ring slot: the index does not match his key."""
    bob = lb.identities["bob"].signing_key

    def hook(member, data):
        env = decode(data)
        if member == "bob" and env.msg.TYPE == MsgType.ROUND1:
            carol_idx = sorted(IDS).index("carol")
            fake_z = lb.suite.group.encode(lb.suite.group.base_mult(77))
            return [Round1(env.msg.sid, env.msg.epoch, carol_idx, fake_z).sign(bob, lb.session.session_hash), data]
        return [data]

    r = lb.run_epoch(to_coordinator=hook)
    assert r.agree
    assert r.drops["coordinator:malformed"] == 1


def test_non_member_ignores_starts_for_a_roster_without_it():
    lb = Loopback(GK1, IDS, seed=3)
    r = lb.run_epoch(participants=["alice", "bob", "carol"])
    assert r.agree and set(r.keys) == {"alice", "bob", "carol"}
    events = lb.members["erin"].receive(lb.session.start_message, NOW)
    assert events == [Dropped(events[0].reason, events[0].detail)]
    assert events[0].reason == "non_member"
    assert lb.members["erin"].current is None


def test_start_signed_by_unknown_coordinator_is_dropped(lb):
    rogue = lb.suite.generate_signing_key(SeededRng("rogue"))
    cs = CoordinatorSession(
        suite=lb.suite,
        signing_key=rogue,
        group_id="grp-1",
        epoch=1,
        members=[(m, i.signing_key.public_key) for m, i in lb.identities.items()],
        now=NOW,
    )
    ev = lb.members["alice"].receive(cs.start_message, NOW)
    assert ev[0].reason == "unknown_key"
    assert lb.members["alice"].session is None


# --- replay and rollback ------------------------------------------------------------------------


def test_replay_of_an_older_session_is_dropped_and_harmless(lb):
    recorded: list[tuple[str, bytes]] = []

    def record_up(member, data):
        recorded.append(("", data))
        return [data]

    def record_down(member, data):
        recorded.append((member, data))
        return [data]

    first = lb.run_epoch(to_coordinator=record_up, to_member=record_down)
    assert first.agree

    def replay_up(member, data):
        return [data] + [d for dest, d in recorded if dest == ""]

    def replay_down(member, data):
        return [d for dest, d in recorded if dest == member] + [data]

    second = lb.run_epoch(to_coordinator=replay_up, to_member=replay_down)
    assert second.agree
    assert second.coordinator.key_id != first.coordinator.key_id
    assert second.drops["coordinator:other_session"] > 0
    assert second.drops["member:rollback"] >= len(IDS)  # old Starts: epoch 1 <= committed 1
    assert second.drops["member:other_session"] >= len(IDS)  # old bundles and commits


def test_rollback_start_with_lower_epoch_is_rejected(lb):
    for _ in range(3):
        assert lb.run_epoch().agree
    old = CoordinatorSession(
        suite=lb.suite,
        signing_key=lb.coordinator_key,
        group_id="grp-1",
        epoch=2,
        members=[(m, i.signing_key.public_key) for m, i in lb.identities.items()],
        now=NOW,
    )
    for m in lb.members.values():
        ev = m.receive(old.start_message, NOW)
        assert ev[0].reason == "rollback"
        assert m.committed_epoch == 3


def test_stale_start_outside_skew_is_rejected(lb):
    cs = CoordinatorSession(
        suite=lb.suite,
        signing_key=lb.coordinator_key,
        group_id="grp-1",
        epoch=1,
        members=[(m, i.signing_key.public_key) for m, i in lb.identities.items()],
        now=NOW,
        timeout_ms=3_600_000,
    )
    ev = lb.members["alice"].receive(cs.start_message, NOW + 10 * 60_000)
    assert ev[0].reason == "stale"


def test_newer_attempt_supersedes_a_live_session(lb):
    members = [(m, i.signing_key.public_key) for m, i in lb.identities.items()]
    first = CoordinatorSession(
        suite=lb.suite, signing_key=lb.coordinator_key, group_id="grp-1", epoch=1, members=members, now=NOW
    )
    second = CoordinatorSession(
        suite=lb.suite,
        signing_key=lb.coordinator_key,
        group_id="grp-1",
        epoch=1,
        members=members,
        now=NOW,
        attempt=1,
    )
    alice = lb.members["alice"]
    alice.receive(first.start_message, NOW)
    events = alice.receive(second.start_message, NOW)
    assert isinstance(events[0], Aborted) and events[0].reason == AbortReason.SUPERSEDED
    # and the old attempt cannot come back
    assert alice.receive(first.start_message, NOW)[0].reason in ("duplicate", "stale")


# --- invalid points and malformed bytes ---------------------------------------------------------


@pytest.mark.parametrize("bad_point", ["identity", "garbage", "non_canonical"])
def test_invalid_points_from_a_member_are_dropped(lb, bad_point):
    group = lb.suite.group
    bob = lb.identities["bob"].signing_key
    value = {
        "identity": group.identity_encoding + bytes(group.element_len - len(group.identity_encoding)),
        "garbage": b"\xff" * group.element_len,
        "non_canonical": (b"\xed" + b"\xff" * 30 + b"\x7f") if group.element_len == 32 else b"\x02" + b"\xff" * 32,
    }[bad_point]

    def hook(member, data):
        env = decode(data)
        if member == "bob" and env.msg.TYPE == MsgType.ROUND1:
            return [Round1(env.msg.sid, env.msg.epoch, env.msg.idx, value).sign(bob, lb.session.session_hash)]
        return [data]

    r = lb.run_epoch(to_coordinator=hook)
    # Bob's only round-1 message was invalid, so the session times out naming him.
    assert r.drops["coordinator:invalid_element"] == 1
    assert isinstance(r.coordinator, Aborted) and r.coordinator.excluded == ("bob",)
    assert not r.keys
    # The caller restarts without Bob and the rest agree.
    assert lb.run_epoch(participants=[m for m in IDS if m != "bob"], epoch=1, attempt=1).agree


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[: len(d) // 2],  # truncated
        lambda d: d + b"\x00" * 300,  # oversized
        lambda d: d.replace(b"\xd2\x84", b"\xd2\x98\x04", 1),  # non-canonical array head
        lambda d: b"\xff" * 10,  # garbage
        lambda d: cbor.dumps({1: 2}),  # valid CBOR, not a message
    ],
)
def test_malformed_bytes_never_break_a_session(lb, mangle):
    def up(member, data):
        return [mangle(data), data]

    def down(member, data):
        return [mangle(data), data]

    r = lb.run_epoch(to_coordinator=up, to_member=down)
    assert r.agree
    assert r.drops
    assert all(k.endswith(("malformed", "bad_signature")) for k in r.drops), r.drops


# --- deadlines and exclusion --------------------------------------------------------------------


def test_member_missing_the_deadline_is_reported_and_excluded(lb):
    r = lb.run_epoch(offline=["erin"])
    assert isinstance(r.coordinator, Aborted)
    assert r.coordinator.reason == AbortReason.TIMEOUT
    assert r.coordinator.excluded == ("erin",)
    assert not r.keys
    for m in IDS[:-1]:
        assert isinstance(r.member_results[m], Aborted)  # the coordinator's Abort reached them
    again = lb.run_epoch(participants=IDS[:-1], epoch=1, attempt=1)
    assert again.agree and "erin" not in again.keys


def test_member_times_out_on_its_own_without_an_abort(lb):
    members = [(m, i.signing_key.public_key) for m, i in lb.identities.items()]
    cs = CoordinatorSession(
        suite=lb.suite, signing_key=lb.coordinator_key, group_id="grp-1", epoch=1, members=members, now=NOW
    )
    alice = lb.members["alice"]
    alice.receive(cs.start_message, NOW)
    assert alice.tick(cs.deadline) == []
    ev = alice.tick(alice.get_timer() + 1)
    assert isinstance(ev[0], Aborted) and ev[0].reason == AbortReason.TIMEOUT


def test_equivocating_member_is_counted_not_fatal(lb):
    bob = lb.identities["bob"].signing_key

    def hook(member, data):
        env = decode(data)
        if member == "bob" and env.msg.TYPE == MsgType.ROUND1:
            other = lb.suite.group.encode(lb.suite.group.base_mult(4242))
            return [data, Round1(env.msg.sid, env.msg.epoch, env.msg.idx, other).sign(bob, lb.session.session_hash)]
        return [data]

    r = lb.run_epoch(to_coordinator=hook)
    assert r.agree
    assert r.drops["coordinator:equivocation"] == 1


def test_keys_from_aborted_sessions_are_never_released(lb):
    r = lb.run_epoch(offline=["alice"])
    for m in IDS:
        assert lb.members[m].current is None
        assert not isinstance(r.member_results[m], KeyEstablished)


def test_start_is_bound_to_its_fields():
    """Changing any field of a Start (and re-signing it) breaks the sid binding."""
    lb = Loopback(GK1, IDS, seed=4)
    members = [(m, i.signing_key.public_key) for m, i in lb.identities.items()]
    cs = CoordinatorSession(
        suite=GK1, signing_key=lb.coordinator_key, group_id="grp-1", epoch=1, members=members, now=NOW
    )
    s = cs.start
    forged = Start(s.sid, s.epoch, s.group_id, s.suite, s.roster, Mode.ATTESTED, s.nonce, s.issued_at, s.deadline, 0)
    ev = lb.members["alice"].receive(forged.sign(lb.coordinator_key), NOW)
    assert ev[0].reason == "malformed"
