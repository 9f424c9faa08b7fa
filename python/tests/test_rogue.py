"""A rogue coordinator: the gateway itself deviates, driving real GroupMembers and MemberSessions.

In end-to-end mode the gateway is trusted for liveness only (docs/protocol.md §4.4). Each test
plays one deviation with the real coordinator signing key and checks that no honest member commits
a key the rogue can compute, and that the members give the precise reason. Where the rogue's
attack would yield a key (the mode downgrade), the test performs the rogue's own derivation and
asserts it matches none of the members' keys. End to end over CoAP, the same refusals are checked
in tests/test_e2e.py (mode) and tests/test_power_cut.py (recovery).
"""

from __future__ import annotations

import cbor2
import pytest

from gridkey.crypto import GK1, GK2, SeededRng
from gridkey.crypto.identity import Revocation
from gridkey.protocol import cbor, cose
from gridkey.protocol.coordinator import CoordinatorSession
from gridkey.protocol.directory import RevocationRollback
from gridkey.protocol.errors import AbortReason, DropReason
from gridkey.protocol.events import Aborted, KeyEstablished, KeysNeeded, Refused, Send
from gridkey.protocol.keyschedule import derive, transcript_hash
from gridkey.protocol.loopback import Loopback
from gridkey.protocol.member import MemberState
from gridkey.protocol.messages import Bundle, Commit, Mode, decode
from gridkey.protocol.policy import MemberPolicy

SUITES = {"GK1": GK1, "GK2": GK2}
IDS = ["alice", "bob", "carol", "dave"]
NOW = 1_700_000_000_000
DAY = 86_400_000


@pytest.fixture(params=list(SUITES))
def suite(request):
    return SUITES[request.param]


def start_for(lb: Loopback, members: list[tuple[str, object]], *, mode: Mode = Mode.E2E, epoch: int = 1):
    """A Start the rogue signs with the real coordinator key, for any roster it likes."""
    return CoordinatorSession(
        suite=lb.suite, signing_key=lb.coordinator_key, group_id="grp-1", epoch=epoch,
        members=members, now=NOW, mode=mode,
    )  # fmt: skip


def roster(lb: Loopback, ids=IDS) -> list[tuple[str, object]]:
    return [(m, lb.identities[m].signing_key.public_key) for m in ids]


def feed(lb: Loopback, data: bytes, now: int = NOW) -> dict[str, list]:
    return {m: lb.members[m].receive(data, now) for m in IDS}


def refusal(events: list) -> Refused:
    got = [e for e in events if isinstance(e, Refused)]
    assert len(got) == 1, events
    return got[0]


# --- 1. the mode downgrade ----------------------------------------------------------------------


def downgrade_attack(suite, policy: MemberPolicy):
    """The rogue runs an attested session with alice alone (it plays every other member): it picks
    her ring neighbours' z from scalars it knows, lets her compute X_0, picks the other X values,
    echoes her own confirmation tag in the Commit, and derives her key from what she sent.

    Returns (alice's committed keys or None, the keys the rogue derived or None, alice's events).
    """
    lb = Loopback(suite, IDS, seed="downgrade", mode=Mode.ATTESTED, policy=policy)
    group, n = suite.group, len(IDS)
    alice = lb.members["alice"]
    cs = start_for(lb, roster(lb), mode=Mode.ATTESTED)
    sh, sid, key = cs.session_hash, cs.sid, lb.coordinator_key
    events = alice.receive(cs.start_message, NOW)
    sent = [e for e in events if isinstance(e, Send)]
    if not sent:
        return None, None, events
    z0 = decode(sent[0].data).msg.z
    r = {j: group.random_scalar(SeededRng(f"rogue-{j}")) for j in range(1, n)}
    zs = [z0, *(group.encode(group.base_mult(r[j])) for j in range(1, n))]
    (round2,) = alice.receive(Bundle(sid, 1, 1, tuple(zs)).sign(key), NOW)
    x0 = decode(round2.data).msg.x
    xs = [x0, *(group.encode(group.base_mult(r[j] * 7 + j)) for j in range(1, n))]
    (confirm,) = alice.receive(Bundle(sid, 1, 2, tuple(xs)).sign(key), NOW)
    tag = decode(confirm.data).msg.tag
    # K = n·r_0·z_{n-1} + (n-1)·X_0 + ... + 1·X_{n-2}, and r_0·z_{n-1} = r_{n-1}·z_0: no r_0 needed
    z0_el = group.decode(z0)
    k = group.mult(n * r[n - 1] % group.order, z0_el)
    for m in range(n - 1):
        k = group.add(k, group.mult(n - 1 - m, group.decode(xs[m])))
    th = transcript_hash(suite, sh, zs, xs)
    rogue = derive(suite, group.encode(k), th, group_id="grp-1", epoch=1, sid=sid, roster=())
    done = alice.receive(Commit(sid, 1, rogue.keys.key_id, tag).sign(key), NOW)
    got = next((e.keys for e in done if isinstance(e, KeyEstablished)), None)
    return got, rogue.keys, events


def test_mode_downgrade_is_refused_where_it_would_give_the_rogue_the_key(suite):
    """Attested mode lets the coordinator choose every value a member multiplies: an opted-in
    member commits a key the rogue computed (the documented limit of that opt-in). A member
    provisioned for end-to-end only refuses the Start: it never sends a value, holds no key."""
    opted_in, rogue, _ = downgrade_attack(suite, MemberPolicy(modes=frozenset(Mode)))
    assert opted_in is not None and opted_in.aead_key == rogue.aead_key  # the attack is real

    got, rogue, events = downgrade_attack(suite, MemberPolicy())
    assert got is None and rogue is None
    r = refusal(events)
    assert r.reason == DropReason.MODE_REFUSED and "attested" in r.detail


# --- 2. the gateway in its own roster -----------------------------------------------------------


def test_a_gateway_identity_in_the_roster_is_refused(suite):
    lb = Loopback(suite, IDS, seed="gw")
    gw_key = lb.suite.generate_signing_key(SeededRng("gateway-member"))
    lb.directory.add("gateway", gw_key.public_key, "gateway")  # a CA-valid gateway certificate
    cs = start_for(lb, [*roster(lb), ("gateway", gw_key.public_key)])
    for m, events in feed(lb, cs.start_message).items():
        assert refusal(events).reason == DropReason.WRONG_ROLE, m
        assert not any(isinstance(e, Send) for e in events)


def test_a_roster_pairing_a_member_id_with_another_key_is_refused(suite):
    lb = Loopback(suite, IDS, seed="pair")
    carol_key = lb.identities["carol"].signing_key.public_key
    cs = start_for(lb, [("alice", lb.identities["alice"].signing_key.public_key), ("bob", carol_key)])
    events = lb.members["alice"].receive(cs.start_message, NOW)
    assert refusal(events).reason == DropReason.KEY_MISMATCH


# --- 3. revocation fails closed -----------------------------------------------------------------


def test_no_crl_means_no_session(suite):
    lb = Loopback(suite, IDS, seed="nocrl", crl=False)
    events = feed(lb, start_for(lb, roster(lb)).start_message)
    for m, evs in events.items():
        assert refusal(evs).reason == DropReason.NO_FRESH_CRL, m
        assert any(isinstance(e, KeysNeeded) and e.crl for e in evs)
        assert lb.members[m].session is None


def test_a_stale_or_expired_crl_is_not_used(suite):
    lb = Loopback(suite, IDS, seed="stale", crl=False)
    lb.directory.apply_revocation(Revocation(NOW - 8 * DAY, NOW + DAY, 1))  # older than 7 days
    assert refusal(lb.members["alice"].receive(start_for(lb, roster(lb)).start_message, NOW)).reason == "no_fresh_crl"
    lb.directory.apply_revocation(Revocation(NOW - DAY, NOW - 1, 2))  # past its nextUpdate
    cs = start_for(lb, roster(lb), epoch=2)
    assert refusal(lb.members["alice"].receive(cs.start_message, NOW)).reason == "no_fresh_crl"


def test_a_revoked_member_is_refused_even_when_cached_and_a_rollback_does_not_revive_it(suite):
    lb = Loopback(suite, IDS, seed="revoked", crl=False)
    bob = lb.identities["bob"].signing_key.public_key
    lb.directory.add("bob", bob, "meter", serial=0xB0B)  # cached from an earlier session
    lb.directory.apply_revocation(Revocation(NOW - 1000, NOW + DAY, 7, frozenset({0xB0B})))
    events = lb.members["alice"].receive(start_for(lb, roster(lb)).start_message, NOW)
    assert refusal(events).reason == DropReason.REVOKED_PEER and "bob" in refusal(events).detail
    # the gateway serves an older CRL, from before the revocation
    with pytest.raises(RevocationRollback):
        lb.directory.apply_revocation(Revocation(NOW - 2000, NOW + DAY, 6))
    cs = start_for(lb, roster(lb), epoch=2)
    assert refusal(lb.members["alice"].receive(cs.start_message, NOW)).reason == DropReason.REVOKED_PEER
    with pytest.raises(ValueError, match="revoked"):  # nor can the rogue re-list bob's certificate
        lb.directory.add("bob", bob, "meter", serial=0xB0B)


# --- 4. substituted values, forged Commit, aliases ----------------------------------------------


def forge_round1(lb: Loopback, inner, z: bytes) -> bytes:
    """carol's Round1 carrying the rogue's z, under carol's kid but the rogue's signature."""
    payload = type(inner)(inner.sid, inner.epoch, inner.idx, z).to_payload()
    kid = lb.identities["carol"].signing_key.kid
    protected = cose.protected_header(lb.coordinator_key.public_key.cose_alg)
    sig = lb.coordinator_key.sign(cose.sig_structure(protected, lb.session.session_hash, payload))
    return cbor.dumps(cbor2.CBORTag(18, [protected, {4: kid}, payload, sig]))


@pytest.mark.parametrize("who", ["one", "all", "each-different"])
def test_substituted_z_values_end_every_honest_session(suite, who):
    """The rogue replaces carol's z inside round-1 bundles (to one member, to all, a different value
    to each), re-signing each bundle. Her ring neighbours (bob, dave) check her signature; alice
    does not (signature economy) but carol's Round2 then covers another round-1 transcript than
    alice's; carol sees her own z altered. Nobody commits; each says why."""
    lb = Loopback(suite, IDS, seed=f"subst-{who}")
    group = suite.group

    def down(member, data):
        env = decode(data)
        if not (isinstance(env.msg, Bundle) and env.msg.round == 1) or (who == "one" and member != "alice"):
            return [data]
        items = list(env.msg.items)
        z = group.encode(group.base_mult(1000 + (IDS.index(member) if who == "each-different" else 0)))
        items[2] = forge_round1(lb, decode(items[2]).msg, z)
        return [Bundle(env.msg.sid, env.msg.epoch, 1, tuple(items)).sign(lb.coordinator_key)]

    alice_round2: list[bytes] = []

    def up(member, data):
        if member == "alice" and type(decode(data).msg).__name__ == "Round2":
            alice_round2.append(data)
        return [data]

    def down_keep_alice(member, data):  # the rogue never aborts alice: it wants her key
        if member == "alice" and type(decode(data).msg).__name__ == "Abort":
            return []
        return down(member, data)

    r = lb.run_epoch(to_member=down_keep_alice, to_coordinator=up)
    assert r.keys == {}
    if who != "one":
        for m, reason in (
            ("bob", "bad_peer_signature"),
            ("dave", "bad_peer_signature"),
            ("carol", "transcript_mismatch"),
        ):
            res = r.member_results[m]
            assert isinstance(res, Aborted) and res.reason == reason, (m, res)
    # alice cannot tell at round 1 (she checks only her neighbours' signatures); the rogue now
    # hands her a round-2 bundle: her Round2 and her peers' genuine ones, where it has them
    cs = lb.session
    peers = {e.msg.idx: e.raw for e in cs._slots[2].values()}
    if who == "one" and len(peers) == len(IDS) - 1:
        items = tuple([alice_round2[0], *(peers[j] for j in range(1, len(IDS)))])
        events = lb.members["alice"].receive(Bundle(cs.sid, 1, 2, items).sign(lb.coordinator_key), NOW)
        assert isinstance(events[0], Aborted) and events[0].reason == AbortReason.TRANSCRIPT_MISMATCH, events
        assert "does not cover our round-1 transcript" in events[0].detail
    else:
        assert who != "one", "the honest members' Round2 should all be there"
    assert lb.members["alice"].current is None


def test_a_forged_commit_gives_no_key(suite):
    lb = Loopback(suite, IDS, seed="commit")

    def down(member, data):
        env = decode(data)
        if isinstance(env.msg, Commit):
            return [Commit(env.msg.sid, env.msg.epoch, env.msg.key_id, bytes(16)).sign(lb.coordinator_key)]
        return [data]

    r = lb.run_epoch(to_member=down)
    assert r.keys == {}
    assert all(res.reason == AbortReason.CONFIRM_MISMATCH for res in r.member_results.values())


def test_an_aliased_z_from_another_member_is_dropped():
    """Bob re-sends alice's z with bit 255 set (the same element to a lax decoder): the coordinator's
    "z repeats" check must not be bypassed that way."""
    lb = Loopback(GK1, IDS, seed="alias")
    seen: dict[str, bytes] = {}

    def up(member, data):
        env = decode(data)
        if type(env.msg).__name__ == "Round1":
            seen[member] = env.msg.z
            if member == "bob" and "alice" in seen:
                alias = seen["alice"][:31] + bytes([seen["alice"][31] | 0x80])
                forged = type(env.msg)(env.msg.sid, env.msg.epoch, env.msg.idx, alias)
                return [forged.sign(lb.identities["bob"].signing_key, lb.session.session_hash), data]
        return [data]

    r = lb.run_epoch(to_coordinator=up)
    assert r.agree  # bob's genuine Round1 still counts
    assert r.drops["coordinator:invalid_element"] == 1


def test_a_replayed_start_from_an_earlier_epoch_is_refused(suite):
    lb = Loopback(suite, IDS, seed="replay")
    assert lb.run_epoch().agree
    old = lb.session.start_message
    assert lb.run_epoch().agree
    events = lb.members["alice"].receive(old, NOW)
    assert [e.reason for e in events] == [DropReason.ROLLBACK]


# --- 5. recovery ---------------------------------------------------------------------------------


def test_a_confirmed_member_keeps_its_key_for_a_late_commit(suite):
    """A Commit delayed past the deadline still completes the session (a member used to abort at
    its deadline, dropping a key it had derived and confirmed)."""
    lb = Loopback(suite, IDS, seed="late")
    held: list[bytes] = []

    def down(member, data):
        if member == "alice" and isinstance(decode(data).msg, Commit):
            held.append(data)
            return []
        return [data]

    r = lb.run_epoch(to_member=down)
    alice = lb.members["alice"]
    assert alice.session.state == MemberState.AWAIT_COMMIT and "alice" not in r.keys
    late = lb.session.deadline + 60_000
    assert alice.tick(late) == [] and alice.get_timer() is None
    events = alice.receive(held[0], late)
    assert isinstance(events[0], KeyEstablished) and events[0].keys.key_id == r.coordinator.key_id
    assert not alice.keyless


def test_a_member_that_lost_its_session_knows_it_is_keyless(suite):
    lb = Loopback(suite, IDS, seed="keyless")
    assert lb.run_epoch().agree
    # same identity, restarted: no key, and a new ephemeral (its z is not the one in the bundles)
    fresh = Loopback(suite, IDS, seed="keyless", rng=SeededRng("after-restart")).members["alice"]
    fresh.directory.apply_revocation(Revocation(NOW, NOW + DAY, 99))
    fresh.receive(lb.session.start_message, NOW)
    for kind in ("bundle1", "bundle2", "commit"):
        fresh.receive(lb.session.broadcasts[kind], NOW)
    assert fresh.current is None and fresh.keyless


def test_a_restarted_member_that_only_sees_an_old_start_knows_it_is_keyless(suite):
    """After a power cut the newest Start may be past its deadline (stale): too old to join, but it
    still says which epoch the group is at, so the member knows to ask."""
    lb = Loopback(suite, IDS, seed="stale-keyless")
    assert lb.run_epoch().agree
    fresh = Loopback(suite, IDS, seed="stale-keyless", rng=SeededRng("after")).members["alice"]
    fresh.directory.apply_revocation(Revocation(NOW, NOW + DAY, 99))
    ev = fresh.receive(lb.session.start_message, lb.session.deadline + 1)
    assert [e.reason for e in ev] == [DropReason.STALE]
    assert fresh.session is None and fresh.keyless
