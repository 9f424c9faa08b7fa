"""The meter's CoAP link against a real aiocoap server that forges answers: plain CoAP is
unauthenticated, so every shape a gateway (or the network) can send must end as a LinkError,
never as an exception that kills a meter's task."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import aiocoap.resource as resource
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.meter.links import CoapLink, LinkError, _inbox_item

GOOD = {
    "gateway": {1: "gw", 2: b"cert", 3: b"ca"},
    "groups/g/certs": [["m-1", "meter", b"der"]],
    "groups/g/session": [b"msg"],
    "groups/g/data": [[1, "m-1", b"sealed"]],
}
FORGED = [5, None, "x", {1: 2}, [5], [[1, "m-1"]], [[True, "m-1", b"x"]], [[b"1", "m-1", b"x"]], [[1, "m-1", "str"]]]


class Forger(resource.Resource):
    def __init__(self) -> None:
        super().__init__()
        self.answer: object = None

    async def render_get(self, request):
        return aiocoap.Message(payload=cbor2.dumps(self.answer))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _calls(answers: list[tuple[str, object]]) -> list[object]:
    site, forgers = resource.Site(), {}
    for path in GOOD:
        forgers[path] = Forger()
        site.add_resource(["gk", *path.split("/")], forgers[path])
    port = _free_udp_port()
    server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    link = CoapLink(f"coap://127.0.0.1:{port}")
    await link.open()
    calls = {
        "gateway": lambda: link.gateway_info(),
        "groups/g/certs": lambda: link.certs("g"),
        "groups/g/session": lambda: link.session("g"),
        "groups/g/data": lambda: link.data_since("g", 0),
    }
    out: list[object] = []
    try:
        for path, answer in answers:
            forgers[path].answer = answer
            try:
                out.append(await calls[path]())
            except LinkError as exc:
                out.append(exc)
    finally:
        await link.close()
        await server.shutdown()
    return out


def test_well_formed_answers_parse():
    got = asyncio.run(_calls(list(GOOD.items())))
    assert got == [("gw", b"cert", b"ca"), [("m-1", "meter", b"der")], [b"msg"], [(1, "m-1", b"sealed")]]


@pytest.mark.parametrize("path", sorted(GOOD))
def test_every_forged_shape_is_a_link_error(path):
    got = asyncio.run(_calls([(path, f) for f in FORGED]))
    assert all(isinstance(g, LinkError) and g.status == 502 for g in got), got


SID = b"\x01" * 16
GOOD_ITEMS = [None, ["s", SID, "start", b"msg"], ["s", SID, "commit", None], ["d", 7, b"x"], ["d", 7, None]]
FORGED_ITEMS = [
    cbor2.CBORTag(1, 0),  # a notification tampered in transit decoded to this and killed the observe loop once
    [],
    "s",
    ["s", b"sid", "start"],
    ["s", "sid", "start", b"m"],
    ["s", b"sid", "hello", b"m"],
    ["s", b"sid", "start", "m"],
    ["d", True, b"x"],
    ["d", "7", b"x"],
    ["d", 7, b"x", 1],
    ["x", 7, b"x"],
]


@pytest.mark.parametrize("item", GOOD_ITEMS, ids=repr)
def test_well_formed_inbox_items_parse(item):
    assert _inbox_item(item) == item


@pytest.mark.parametrize("item", FORGED_ITEMS, ids=repr)
def test_every_forged_inbox_item_is_a_link_error(item):
    with pytest.raises(LinkError) as info:
        _inbox_item(item)
    assert info.value.status == 502


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=5), max_leaves=12))  # fmt: skip
def test_any_decoded_value_is_an_item_or_a_link_error(value):
    try:
        assert _inbox_item(value) == value
    except LinkError as exc:
        assert exc.status == 502
