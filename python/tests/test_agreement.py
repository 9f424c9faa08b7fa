"""Every member derives the same key, for any roster, both suites and both verification modes."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.crypto import GK1, GK2
from gridkey.protocol import bd
from gridkey.protocol.coordinator import CoordinatorSession
from gridkey.protocol.events import Committed
from gridkey.protocol.loopback import Loopback
from gridkey.protocol.messages import MEMBER_MSG_MAX, Mode

SUITES = {"GK1": GK1, "GK2": GK2}
member_ids = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,11}", fullmatch=True), min_size=2, max_size=30, unique=True)


def check(result, n):
    assert result.agree, (result.coordinator, result.drops)
    assert isinstance(result.coordinator, Committed)
    assert len(result.keys) == n
    assert max(result.member_msg_sizes) <= MEMBER_MSG_MAX
    assert not result.drops, result.drops


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name)
@pytest.mark.parametrize("suite", SUITES)
@given(ids=member_ids, seed=st.integers(0, 2**32))
def test_agreement_small_groups(suite, mode, ids, seed):
    lb = Loopback(SUITES[suite], ids, seed=seed, mode=mode)
    check(lb.run_epoch(), len(ids))


@pytest.mark.parametrize("suite", SUITES)
@given(ids=member_ids, seed=st.integers(0, 2**32), order=st.randoms(use_true_random=False))
def test_agreement_under_reordering_and_duplication(suite, ids, seed, order):
    lb = Loopback(SUITES[suite], ids, seed=seed)

    def dup(_m, data):
        return [data, data] if order.random() < 0.3 else [data]

    result = lb.run_epoch(shuffle=order, to_member=dup, to_coordinator=dup)
    assert result.agree
    assert set(result.drops) <= {"coordinator:duplicate", "member:duplicate"}


@pytest.mark.parametrize("suite", SUITES)
def test_fresh_key_every_epoch(suite):
    lb = Loopback(SUITES[suite], ["a", "b", "c", "d"], seed=5)
    ids = set()
    for epoch in range(1, 5):
        r = lb.run_epoch()
        assert r.agree and r.coordinator.epoch == epoch
        ids.add(r.coordinator.key_id)
    assert len(ids) == 4
    for m in lb.members.values():
        assert m.committed_epoch == 4
        assert m.previous.epoch == 3 and m.current.epoch == 4


def test_key_is_the_bd_key():
    """K from the members' running sums equals (Σ r_i r_{i+1})·G computed from all secrets."""
    group = GK1.group
    rng = random.Random(7)
    for n in (2, 3, 4, 9):
        rs = [rng.randrange(1, group.order) for _ in range(n)]
        zs = [group.base_mult(r) for r in rs]
        xs = [bd.compute_x(group, rs[i], zs[i - 1], zs[(i + 1) % n], n) for i in range(n)]
        expected = group.encode(bd.expected_key(group, rs))
        for i in range(n):
            assert group.encode(bd.compute_key(group, rs[i], i, zs[i - 1], xs)) == expected


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name)
def test_agreement_100(suite, mode):
    ids = [f"meter-{i:04d}" for i in range(100)]
    check(Loopback(SUITES[suite], ids, seed=100, mode=mode).run_epoch(), 100)


@pytest.mark.slow
@pytest.mark.parametrize(
    "suite,mode", [("GK1", Mode.E2E), ("GK1", Mode.ATTESTED), ("GK2", Mode.E2E)], ids=lambda v: str(v)
)
def test_agreement_500(suite, mode):
    ids = [f"meter-{i:04d}" for i in range(500)]
    result = Loopback(SUITES[suite], ids, seed=500, mode=mode, timeout_ms=600_000).run_epoch()
    check(result, 500)
    if suite == "GK1":
        assert max(result.member_msg_sizes) <= 160


@pytest.mark.parametrize("n", [2, 3, 10, 23, 24, 100, 255, 256])
def test_gk1_member_messages_fit_200_bytes_at_every_size(n):
    """Measured on the encoded bytes each member really sends, in attested mode to keep it quick."""
    ids = [f"meter-{i:04d}" for i in range(n)]
    result = Loopback(GK1, ids, seed=n, mode=Mode.ATTESTED, timeout_ms=600_000).run_epoch()
    assert result.agree
    assert len(result.member_msg_sizes) == 3 * n
    assert max(result.member_msg_sizes) <= 160  # the GK1 target; 200 is the hard limit


def test_coordinator_never_sees_the_key():
    """Nothing the coordinator holds or broadcasts contains the group key or its AEAD key."""
    lb = Loopback(GK1, ["a", "b", "c"], seed=9)
    r = lb.run_epoch()
    keys = r.keys["a"]
    blob = repr(lb.session.to_record()).encode() + b"".join(lb.session.broadcasts.values())
    for secret in (keys.aead_key, keys.base_iv, keys.exporter_secret):
        assert secret not in blob
    assert "aead" not in repr(keys)


def test_coordinator_resumes_from_record_mid_session():
    """Kill the coordinator after round 1; a fresh object restored from the record finishes the job."""
    lb = Loopback(GK1, ["a", "b", "c", "d"], seed=11)
    now = 1_700_000_000_000
    ids = list(lb.identities)
    members = [(m, lb.identities[m].signing_key.public_key) for m in ids]
    cs = CoordinatorSession(
        suite=GK1, signing_key=lb.coordinator_key, group_id="grp-1", epoch=1, members=members, now=now
    )
    round1 = [ev.data for m in ids for ev in lb.members[m].receive(cs.start_message, now)]
    bundle1 = next(ev for d in round1 for ev in cs.receive(d, now) if hasattr(ev, "kind")).data
    round2 = [ev.data for m in ids for ev in lb.members[m].receive(bundle1, now)]
    cs.receive(round2[0], now)
    record = cs.to_record()
    del cs
    cs2 = CoordinatorSession.from_record(record, suite=GK1, signing_key=lb.coordinator_key, members=members)
    assert cs2.missing() == tuple(ids[1:])
    out = [ev for d in round2[1:] for ev in cs2.receive(d, now)]
    assert sum(1 for ev in out if ev.__class__.__name__ == "Dropped") == 0
    bundle2 = next(ev.data for ev in out if getattr(ev, "kind", "") == "bundle2")
    confirms = [ev.data for m in ids for ev in lb.members[m].receive(bundle2, now)]
    done = [ev for d in confirms for ev in cs2.receive(d, now)]
    commit = next(ev.data for ev in done if getattr(ev, "kind", "") == "commit")
    key_ids = {ev.keys.key_id for m in ids for ev in lb.members[m].receive(commit, now)}
    assert key_ids == {cs2.result.key_id}
