"""Benchmark baselines: centralized HPKE key transport and LKH rekey-on-leave."""

import math

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gridkey.bench.baselines import (
    ROOT,
    Rejected,
    _confirm,
    decode_rekey,
    lkh_ancestors,
    lkh_leaf,
    lkh_leave_wrap_count,
    lkh_wrap_aad,
    run_centralized,
    run_lkh,
    setup_centralized,
    setup_lkh,
)
from gridkey.crypto import GK1, GK2
from gridkey.protocol.messages import MEMBER_MSG_MAX

SUITES = {"GK1": GK1, "GK2": GK2}
SIZES = [2, 3, 10, 33]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("run", [run_centralized, run_lkh], ids=["centralized", "lkh"])
def test_agreement(run, suite, n):
    result = run(SUITES[suite], n, seed=n)
    assert result.agree
    assert result.scheme == ("centralized" if run is run_centralized else "lkh")
    assert (result.suite, result.n, result.rounds) == (suite, n, 2)
    assert result.member_msg_bytes_max <= MEMBER_MSG_MAX
    assert result.member_cpu_ms > 0 and result.coordinator_cpu_ms > 0


@pytest.mark.parametrize("suite", SUITES)
def test_suite_by_name(suite):
    assert run_centralized(suite, 3).agree and run_lkh(suite, 3).agree


def test_centralized_byte_accounting():
    server, members = setup_centralized(GK1, 5, seed=7)
    transports = server.distribute()
    confirms = [m.receive(t) for m, t in zip(members, transports, strict=True)]
    result = run_centralized(GK1, 5, seed=7)
    assert result.total_bytes == sum(map(len, transports)) + sum(map(len, confirms))


def test_lkh_byte_accounting():
    n = 10
    server, members = setup_lkh(GK1, n, seed=7)
    rekey = server.rekey_leave(n - 1)
    confirms = [m.receive_rekey(rekey) for m in members[:-1]]
    result = run_lkh(GK1, n, seed=7)
    assert result.total_bytes == len(rekey) * (n - 1) + sum(map(len, confirms))
    assert result.coordinator_msg_bytes_max == len(rekey)


# --- centralized: members reject anything but the server's untouched message -----------------


@pytest.mark.parametrize("suite", SUITES)
def test_centralized_rejects_every_tampered_byte(suite):
    server, members = setup_centralized(SUITES[suite], 3, seed=1)
    transports = server.distribute()
    member, data = members[0], transports[0]
    for i in range(len(data)):
        for delta in (0x01, 0x80):
            bad = data[:i] + bytes([data[i] ^ delta]) + data[i + 1 :]
            with pytest.raises(Rejected):
                member.receive(bad)
            assert member.group_key is None
    for bad in (data[:-1], data + b"\x00", b""):
        with pytest.raises(Rejected):
            member.receive(bad)
    confirm = member.receive(data)  # the genuine message still works afterwards
    assert member.group_key == server.group_key
    assert server.receive_confirm(confirm)


def test_centralized_rejects_message_for_another_member_and_replay():
    server, members = setup_centralized(GK1, 3, seed=2)
    transports = server.distribute()
    with pytest.raises(Rejected, match="another member"):
        members[1].receive(transports[0])
    members[0].receive(transports[0])
    with pytest.raises(Rejected, match="stale"):
        members[0].receive(transports[0])


def test_centralized_server_rejects_bad_confirm():
    server, members = setup_centralized(GK2, 3, seed=3)
    transports = server.distribute()
    confirm = members[0].receive(transports[0])
    for i in range(len(confirm)):
        assert not server.receive_confirm(confirm[:i] + bytes([confirm[i] ^ 1]) + confirm[i + 1 :])
    assert server.confirmed == set()
    assert server.receive_confirm(confirm)
    assert server.confirmed == {0}


# --- LKH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [*range(2, 40), 64, 65, 100, 1024])
def test_lkh_leave_wraps_two_depth_minus_one(n):
    server, members = setup_lkh(GK1, n, seed=n)
    rekey = server.rekey_leave(n - 1)
    _, _, wraps = decode_rekey(rekey, server.signing_key.public_key)
    depth = math.ceil(math.log2(n))
    assert len(wraps) == lkh_leave_wrap_count(n) == 2 * depth - 1
    leaf = lkh_leaf(n, n - 1)
    parent, *above = lkh_ancestors(leaf)
    # Bottom-up: the leaver's parent once (under the sibling), every higher ancestor under both children.
    assert [(w.node, w.child) for w in wraps] == [(parent, leaf ^ 1)] + [
        (a, c) for a in above for c in (2 * a, 2 * a + 1)
    ]
    for m in members[:-1]:  # a member unwraps at most ceil(log2 n) keys
        path = set(lkh_ancestors(m.leaf))
        chain = path | {m.leaf}
        assert sum(1 for w in wraps if w.node in path and w.child in chain) <= depth


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("suite", SUITES)
def test_lkh_leaver_cannot_recover_new_keys(suite, n):
    server, members = setup_lkh(SUITES[suite], n, seed=n)
    leaver = members[-1]
    old_keys = dict(leaver.keys)
    rekey = server.rekey_leave(n - 1)
    sid, epoch, wraps = decode_rekey(rekey, server.signing_key.public_key)
    new_path_keys = {server.node_keys[a] for a in lkh_ancestors(leaver.leaf)}
    assert not new_path_keys & set(old_keys.values())
    # Every key the leaver ever held, and anything it could unwrap with them (closure), against every wrap.
    known = set(old_keys.values())
    recovered = True
    while recovered:
        recovered = False
        for w in wraps:
            for key in list(known):
                try:
                    plain = AESGCM(key).decrypt(w.nonce, w.ciphertext, lkh_wrap_aad(sid, epoch, w.node, w.child))
                except InvalidTag:
                    continue
                assert plain not in new_path_keys
                if plain not in known:
                    known.add(plain)
                    recovered = True
    assert known == set(old_keys.values())
    assert server.group_key not in known
    with pytest.raises(Rejected):
        leaver.receive_rekey(rekey)
    assert leaver.group_key == old_keys[ROOT]
    # The server no longer accepts the leaver, even with a confirmation for the real new key.
    forged = _confirm(SUITES[suite], leaver.signing_key, sid, epoch, leaver.idx, server.group_key)
    assert not server.receive_confirm(forged)


def test_lkh_rejects_tampered_rekey():
    n = 10
    server, members = setup_lkh(GK1, n, seed=5)
    rekey = server.rekey_leave(n - 1)
    member = members[0]
    before = dict(member.keys)
    for i in range(len(rekey)):
        with pytest.raises(Rejected):
            member.receive_rekey(rekey[:i] + bytes([rekey[i] ^ 1]) + rekey[i + 1 :])
        assert member.keys == before
    assert server.receive_confirm(member.receive_rekey(rekey))
    assert member.group_key == server.group_key


def test_lkh_is_reproducible():
    a, _ = setup_lkh(GK1, 10, seed="x")
    b, _ = setup_lkh(GK1, 10, seed="x")
    c, _ = setup_lkh(GK1, 10, seed="y")
    assert a.rekey_leave(9) == b.rekey_leave(9)  # Ed25519 signatures are deterministic
    c.rekey_leave(9)
    assert c.group_key != a.group_key


def test_centralized_group_key_is_reproducible():
    keys = []
    for _ in range(2):
        server, _members = setup_centralized(GK2, 4, seed=9)
        server.distribute()
        keys.append((server.sid, server.group_key, server.key_id))
    assert keys[0] == keys[1]
