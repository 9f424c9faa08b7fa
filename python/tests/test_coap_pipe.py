"""aiocoap's request pipe ending while a response is dispatched (an observer gone mid-notification).

The first test pins the upstream bug (aiocoap 0.4.17) on a real ``aiocoap.pipe.Pipe``: when it starts
passing, aiocoap fixed it and :class:`gridkey.aiocoap_workarounds.EndSafePipe` can go. The others show
the shim ends that exchange quietly and lets every other error through.
"""

from __future__ import annotations

import logging

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.pipe import Pipe

from gridkey.aiocoap_workarounds import EndSafePipe

log = logging.getLogger("test")


def pipe_ended_by_its_listener() -> Pipe:
    """A pipe whose only listener drops its interest while handling a non-last event and still
    asks for more -- what aiocoap's token manager does when sending a notification fails at once."""
    pipe = Pipe(aiocoap.Message(code=Code.GET, uri="coap://127.0.0.1/gk/x"), log)

    def listener(event) -> bool:
        stop()
        return True

    stop = pipe.on_event(listener)
    return pipe


def test_aiocoap_still_has_the_bug_the_shim_works_around() -> None:
    with pytest.raises(TypeError, match="'bool' object is not iterable"):
        pipe_ended_by_its_listener().add_response(aiocoap.Message(code=Code.CONTENT), is_last=False)


def test_the_shim_ends_that_exchange_quietly() -> None:
    ended = []
    inner = pipe_ended_by_its_listener()
    inner.on_interest_end(lambda: ended.append(True))
    EndSafePipe(inner).add_response(aiocoap.Message(code=Code.CONTENT), is_last=False)
    assert ended == [True]  # the exchange is over (aiocoap cancels the render task on this)


def test_the_shim_passes_everything_else_through() -> None:
    pipe = Pipe(aiocoap.Message(code=Code.GET, uri="coap://127.0.0.1/gk/x"), log)
    got = []

    def listener(event) -> bool:
        got.append(event.message.code)
        return True

    pipe.on_event(listener)
    safe = EndSafePipe(pipe)
    safe.add_response(aiocoap.Message(code=Code.CONTENT), is_last=False)
    assert got == [Code.CONTENT] and safe.request is pipe.request

    def broken(event) -> bool:
        raise TypeError("a bug of ours, not the pipe ending")

    other = Pipe(aiocoap.Message(code=Code.GET, uri="coap://127.0.0.1/gk/x"), log)
    other.on_event(broken)
    with pytest.raises(TypeError, match="a bug of ours"):
        EndSafePipe(other).add_response(aiocoap.Message(code=Code.CONTENT), is_last=False)
