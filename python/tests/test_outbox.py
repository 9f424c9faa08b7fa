"""The bridges' outbox: order, bounds and their policies, acknowledgements, dead letters, durability."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridkey.transports.mqtt.config import OutboxLimits
from gridkey.transports.mqtt.outbox import Outbox, OutMessage


def msg(i: int, size: int = 10) -> OutMessage:
    return OutMessage(f"gw:{i}:0", "event", f"t/{i}", bytes(size), 1, False)


def test_accept_keeps_order_and_moves_the_cursor_atomically(tmp_path):
    ob = Outbox(tmp_path / "o.db")
    assert ob.cursor("b") is None
    ob.accept("b", [msg(1), msg(2)], 7, OutboxLimits())
    ob.accept("b", [msg(3)], 9, OutboxLimits())
    assert [q.msg_id for q in ob.pending("b")] == ["gw:1:0", "gw:2:0", "gw:3:0"]
    assert ob.cursor("b") == 9 and ob.depth("b") == (3, 30)
    ob.accept("b", [msg(2)], 5, OutboxLimits())  # a replay after a crash: not queued twice, cursor kept
    assert ob.depth("b") == (3, 30) and ob.cursor("b") == 9
    assert ob.pending("other") == [] and ob.cursor("other") is None


def test_ack_and_dead_letter_remove_only_what_they_name(tmp_path):
    ob = Outbox(tmp_path / "o.db")
    ob.accept("b", [msg(i) for i in range(5)], 5, OutboxLimits())
    seqs = [q.seq for q in ob.pending("b")]
    assert ob.ack("b", seqs[:2]) == 2
    assert ob.ack("b", seqs[:2]) == 0  # a second PUBACK for a resent copy
    assert ob.dead_letter("b", seqs[2], "broker refused: Not authorized (0x87)") == 1
    assert [q.seq for q in ob.pending("b")] == seqs[3:]
    assert ob.dead_letters("b")[0]["reason"] == "broker refused: Not authorized (0x87)"
    c = ob.counters("b")
    assert (c["enqueued"], c["published"], c["dead_lettered"]) == (5, 2, 1)
    assert ob.depth("b") == (2, 20)
    assert [q.seq for q in ob.pending("b", after_seq=seqs[3])] == seqs[4:]


@pytest.mark.parametrize("policy", ["drop-oldest", "reject-new"])
def test_a_full_outbox_follows_its_policy_and_counts(tmp_path, policy):
    ob = Outbox(tmp_path / "o.db")
    limits = OutboxLimits(max_messages=3, max_bytes=1000, full=policy)
    for i in range(5):
        ob.accept("b", [msg(i)], i, limits)
    kept = [q.msg_id for q in ob.pending("b")]
    c = ob.counters("b")
    if policy == "drop-oldest":
        assert kept == ["gw:2:0", "gw:3:0", "gw:4:0"] and c["dropped_full"] == 2 and c["rejected_full"] == 0
    else:
        assert kept == ["gw:0:0", "gw:1:0", "gw:2:0"] and c["rejected_full"] == 2 and c["dropped_full"] == 0
    assert ob.cursor("b") == 4  # refused or not, the event was taken: the cursor moves on
    bytes_limited = OutboxLimits(max_messages=100, max_bytes=1024, full=policy)
    ob.accept("c", [msg(1, 600), msg(2, 600)], 1, bytes_limited)
    assert ob.depth("c")[1] <= 1024


@given(
    st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40),
    st.sampled_from(["drop-oldest", "reject-new"]),
)
@settings(max_examples=60, deadline=None)
def test_bounds_hold_for_any_sequence(tmp_path_factory, sizes, policy):
    ob = Outbox(tmp_path_factory.mktemp("o") / "o.db")
    limits = OutboxLimits(max_messages=7, max_bytes=1500, full=policy)
    for i, size in enumerate(sizes):
        ob.accept("b", [msg(i, size)], i, limits)
        n, nbytes = ob.depth("b")
        pend = ob.pending("b", limit=1000)
        assert n == len(pend) <= 7 and nbytes == sum(len(q.payload) for q in pend) <= 1500
        assert [q.seq for q in pend] == sorted(q.seq for q in pend)
    c = ob.counters("b")
    assert c["enqueued"] - c["dropped_full"] == ob.depth("b")[0]
    assert c["enqueued"] + c["rejected_full"] == len(sizes)


def _writer(path: str, ready) -> None:
    ob = Outbox(path)
    i = 0
    while True:
        ob.accept("b", [msg(i)], i, OutboxLimits())
        if i == 200:
            ready.set()
        i += 1


def test_what_was_accepted_survives_kill_9(tmp_path):
    """A writer killed mid-stream: every accepted message is there, and the cursor matches them."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_writer, args=(str(tmp_path / "o.db"), ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    ob = Outbox(tmp_path / "o.db")
    ids = [int(q.msg_id.split(":")[1]) for q in ob.pending("b", limit=10**6)]
    assert len(ids) > 200 and ids == list(range(len(ids)))  # no gap, no torn write
    assert ob.cursor("b") == ids[-1] and ob.depth("b")[0] == len(ids)
