"""Group data messages: AEAD under the epoch key, per-sender replay windows, controller-signed commands."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.crypto import GK1, GK2
from gridkey.protocol.errors import Rejected
from gridkey.protocol.groupdata import ContentType, GroupChannel, ReplayWindow, peek_key_id
from gridkey.protocol.loopback import Loopback

IDS = ["ctl", "m1", "m2", "m3"]


@pytest.fixture(params=["GK1", "GK2"])
def setup(request):
    suite = {"GK1": GK1, "GK2": GK2}[request.param]
    lb = Loopback(suite, IDS, seed=request.param)
    lb.directory.add("ctl", lb.identities["ctl"].signing_key.public_key, "controller")
    r = lb.run_epoch()
    assert r.agree
    chans = {m: GroupChannel(suite, r.keys[m], m, lb.directory) for m in IDS}
    return lb, r, chans


def test_readings_reach_every_member(setup):
    _, _, ch = setup
    msg = ch["m1"].seal(b'{"kWh": 1.5}')
    for m in ("ctl", "m2", "m3"):
        got = ch[m].open(msg)
        assert (got.sender_id, got.seq, got.content_type, got.plaintext) == (
            "m1",
            0,
            ContentType.READING,
            b'{"kWh": 1.5}',
        )
    assert peek_key_id(msg) == ch["m1"].keys.key_id


def test_replay_and_window(setup):
    _, _, ch = setup
    msgs = [ch["m1"].seal(b"r%d" % i) for i in range(80)]
    rx = ch["m2"]
    rx.open(msgs[10])
    with pytest.raises(Rejected, match="replay"):
        rx.open(msgs[10])
    rx.open(msgs[5])  # late but inside the window: accepted once
    with pytest.raises(Rejected, match="replay"):
        rx.open(msgs[5])
    rx.open(msgs[79])
    with pytest.raises(Rejected, match="replay"):
        rx.open(msgs[11])  # 68 behind the newest: outside the 64-message window


def test_tampering_any_field_fails(setup):
    _, _, ch = setup
    msg = ch["m1"].seal(b"payload")
    tag = cbor2.loads(msg)
    protected, hdr, ct = tag.value
    variants = [
        {**hdr, 4: b"\x02"},  # claim another sender
        {**hdr, 6: b"\x05"},  # another sequence number
        {**hdr, 3: 1},  # claim it is a command
    ]
    for h in variants:
        forged = cbor2.dumps(cbor2.CBORTag(16, [protected, h, ct]), canonical=True)
        with pytest.raises(Rejected):
            ch["m2"].open(forged)
    flipped = bytearray(msg)
    flipped[-1] ^= 1
    with pytest.raises(Rejected, match="authentication"):
        ch["m2"].open(bytes(flipped))
    ch["m2"].open(msg)  # the genuine one still opens: failures did not advance the window


def test_other_epoch_key_is_refused(setup):
    lb, _, ch = setup
    r2 = lb.run_epoch()
    new = GroupChannel(lb.suite, r2.keys["m1"], "m1", lb.directory)
    with pytest.raises(Rejected, match="another epoch"):
        ch["m2"].open(new.seal(b"x"))


def test_commands_need_the_controller(setup):
    lb, _, ch = setup
    ctl_key = lb.identities["ctl"].signing_key
    cmd = ch["ctl"].seal_command(b'{"shed": 10}', ctl_key)
    got = ch["m1"].open(cmd)
    assert got.content_type == ContentType.COMMAND and got.plaintext == b'{"shed": 10}'
    # a meter holds the group key but cannot pass as the controller
    forged = ch["m2"].seal_command(b'{"shed": 100}', lb.identities["m2"].signing_key)
    with pytest.raises(Rejected, match="not a controller"):
        ch["m1"].open(forged)
    # nor can it wrap the controller's signed command as if it had sent it
    with pytest.raises(Rejected):
        ch["m1"].open(ch["m2"].seal(cmd, ContentType.COMMAND))


def test_nonces_never_repeat_within_an_epoch(setup):
    _, _, ch = setup
    seen = set()
    for m in IDS:
        for _ in range(50):
            hdr = cbor2.loads(ch[m].seal(b"x")).value[1]
            seen.add((hdr[4], hdr[6]))
    assert len(seen) == 4 * 50


@given(st.binary(max_size=200))
def test_open_random_bytes_only_rejects(data):
    lb = Loopback(GK1, ["a", "b"], seed=1)
    r = lb.run_epoch()
    ch = GroupChannel(GK1, r.keys["a"], "a", lb.directory)
    with pytest.raises(Rejected):
        ch.open(data)


def test_replay_window_unit():
    w = ReplayWindow(8)
    for s in (0, 1, 2, 7):
        assert w.check(s)
        w.mark(s)
    assert not w.check(2) and w.check(3)
    w.mark(20)
    assert not w.check(12) and w.check(13) and not w.check(20)
