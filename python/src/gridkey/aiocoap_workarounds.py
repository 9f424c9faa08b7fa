"""Workarounds for aiocoap 0.4.17 bugs that hostile input reaches (each pinned by a test that fails
once aiocoap fixes it: python/tests/test_coap_pipe.py, tests/test_coap_bad_input.py).

Both the gateway's CoAP server and the meters' CoAP client use them.
"""

from __future__ import annotations

import logging
from typing import Any

import aiocoap

log = logging.getLogger(__name__)


class EndSafePipe:
    """A request pipe whose ``add_response`` survives the pipe ending while it dispatches.

    aiocoap 0.4.17 bug: ``Pipe._add_event`` calls ``_any_interest()`` after its callbacks, but a
    callback may end the pipe and still return True -- the token manager's does when sending the
    response fails at once and the exchange is dropped (an observer gone mid-notification, a
    hostile network) -- and then ``_event_callbacks`` is ``False`` and it raises ``TypeError: 'bool'
    object is not iterable``. That exception reached the observation loop of :class:`GkResource`,
    then aiocoap's ``run_driving_pipe``, whose report of it is itself broken
    (``Logger._log() got an unexpected keyword argument 'exception'``): two unhandled tracebacks
    for a peer that simply went away. The event was delivered before the pipe ended, so here that
    case is the end of the exchange: nothing more to send (the render task is cancelled by the
    pipe's end). Any other ``TypeError`` still propagates.
    """

    def __init__(self, pipe) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def add_response(self, response: aiocoap.Message, is_last: bool = False) -> None:
        try:
            self._pipe.add_response(response, is_last)
        except TypeError:
            if getattr(self._pipe, "_event_callbacks", None) is not False:
                raise
            log.debug("CoAP exchange ended while a response was being sent; dropping the rest")


def reject_undecodable_strings(context: aiocoap.Context) -> None:
    """Apply :func:`_guard` to every UDP interface of ``context``."""
    for ri in context.request_interfaces:
        iface = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        if hasattr(iface, "datagram_msg_received"):
            _guard(iface)


def _guard(iface) -> None:
    """Answer a datagram with a non-UTF-8 string option (Uri-Path, Uri-Query, ...) as RFC 7252 §4.2
    says for a message format error: RST for a CON, silence for anything else.

    aiocoap 0.4.17 bug: ``Message.decode`` lets the ``UnicodeDecodeError`` of a string option escape
    instead of raising ``UnparsableMessage``, so ``datagram_msg_received`` neither rejects nor
    answers the datagram and the error surfaces as an unhandled traceback from the event loop (one
    per such datagram: any sender can fill the log). Wrapping the receive callback of our own
    interfaces is the narrowest fix; everything else still goes through aiocoap.
    """
    received = iface.datagram_msg_received

    def guarded(data: bytes, ancdata, flags, address) -> None:
        try:
            received(data, ancdata, flags, address)
        except UnicodeDecodeError:
            log.debug("rejected a CoAP datagram from %s: a string option is not UTF-8", address[0])
            if len(data) >= 4 and data[0] >> 6 == 1 and (data[0] >> 4) & 3 == 0:  # a version-1 CON
                iface.transport.sendmsg(bytes([0x70, 0x00, data[2], data[3]]), [], 0, address)  # RST, same MID

    iface.datagram_msg_received = guarded
