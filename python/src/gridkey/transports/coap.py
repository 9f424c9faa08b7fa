"""CoAP transport (aiocoap): the gateway service for meters, with CBOR bodies and Observe.

Resources (all under ``/gk``; ``/.well-known/core`` lists them, RFC 6690)::

    GET  /gk/gateway                          {1: gateway id, 2: gateway cert DER, 3: CA cert DER}
    GET  /gk/crl                              the local CA's CRL (DER)
    POST /gk/meters                           signed enrol request -> 2.01 {meter}
    GET  /gk/meters/{m}                       {meter, groups}
    GET  /gk/meters/{m}/groups/{g}  (Observe) items for member m of group g as they happen (below)
    GET  /gk/groups/{g}                       group state (epoch, key id, members, session)
    GET  /gk/groups/{g}/certs                 [[member id, role, cert DER], ...]
    GET  /gk/groups/{g}/session               all coordinator messages of the latest session
    GET  /gk/groups/{g}/session/{kind}        one of them (start, bundle1, bundle2, commit, abort)
    POST /gk/groups/{g}/rounds                a member's Round1/Round2/Confirm -> 2.04
    POST /gk/groups/{g}/rejoin                signed rejoin request -> 2.04
    POST /gk/groups/{g}/refusal               signed report of a refused Start -> 2.04
    POST /gk/groups/{g}/data                  a group data message -> 2.01 {id}
    GET  /gk/groups/{g}/data?after=N          [[id, sender, message], ...]

Inbox notifications are ``[event id, item, latest]``: ``item`` is ``["s", sid, kind, message|null]``
for a coordinator message or ``["d", id, message|null]`` for group data, and ``latest`` names the
group's newest coordinator message (``["s", sid, kind, null]``) so that a notification overwritten
before it was sent (Observe keeps only the newest) cannot hide a negotiation step; messages over 990 bytes are announced
with ``null`` and fetched with a (block-wise) GET, because block-wise Observe notifications are
not reliable across CoAP stacks. Notifications are lossy by design (RFC 7641), so members also
fetch ``/session`` when they notice a gap.

Every error is a 4.xx with a UTF-8 diagnostic payload (RFC 7252 §5.5.2); nothing a client sends
can produce a 5.xx. The gateway's blocking calls run in a thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap import numbers
from aiocoap.numbers.codes import Code
from aiocoap.pipe import error_to_message, run_driving_pipe
from cryptography.hazmat.primitives.serialization import Encoding

from ..aiocoap_workarounds import EndSafePipe, reject_undecodable_strings
from ..gateway import Gateway, GatewayError, GatewayEvent, Invalid
from ..gateway.batcher import Batcher
from ..protocol.groupdata import DATA_PAGE

log = logging.getLogger(__name__)

CBOR = numbers.ContentFormat.CBOR
COSE_SIGN1 = 18  # application/cose; cose-type="cose-sign1"
COSE_ENCRYPT0 = 16
MAX_BODY = 16 * 1024
_STATUS = {
    400: Code.BAD_REQUEST,
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    409: Code.CONFLICT,
    413: Code.REQUEST_ENTITY_TOO_LARGE,
}


def _cbor(obj: Any, code: Code = Code.CONTENT) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=cbor2.dumps(obj, canonical=True), content_format=CBOR)


def _tagged(obj: Any) -> aiocoap.Message:
    """A list that grows (data, certificates, a session's messages), with an ETag of its content.

    aiocoap's Block2Cache serves blocks 1.. from the rendering block 0 came from, but it keeps one
    rendering per client and resource: a second walk of the same URL from the same meter replaces
    it mid-walk. The ETag is what lets a client see that (RFC 7959 §2.4); without it a meter glued
    blocks of two renderings into CBOR that decoded as garbage (seen under load).
    """
    msg = _cbor(obj)
    msg.opt.etag = hashlib.blake2s(msg.payload, digest_size=8).digest()
    return msg


def _error(status: int, text: str) -> aiocoap.Message:
    return aiocoap.Message(code=_STATUS.get(status, Code.BAD_REQUEST), payload=text[:300].encode())


class GkResource(resource.ObservableResource, resource.PathCapable):
    """Everything under /gk: one small router, because paths carry meter and group ids."""

    async def render_to_pipe(self, pipe) -> None:
        await super().render_to_pipe(EndSafePipe(pipe))

    def __init__(self, server: CoapServer) -> None:
        super().__init__()
        self.s = server
        # (group id, meter id) -> observations of that member's inbox
        self._observers: dict[tuple[str, str], set] = defaultdict(set)
        # (group id, kind) -> (sid, message): coordinator messages are immutable, and block-wise
        # transfer renders a resource once per block, so serve them from memory.
        self._messages: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._last_ref: dict[str, list] = {}  # group id -> ["s", sid, kind, None] of its newest message

    # --- observation ------------------------------------------------------------------------

    async def add_observation(self, request, serverobservation) -> None:
        path = _sub_path(request)
        if len(path) == 2 and path[0] == "meters":
            key = ("", path[1])  # the meter resource: notified when its memberships change
        elif len(path) == 4 and path[0] == "meters" and path[2] == "groups":
            key = (path[3], path[1])
        else:
            _decline(serverobservation)
            return
        if key[0]:
            try:
                status = await self.s.call(self.s.gateway.member_status, key[0], key[1])
            except GatewayError:
                status = "unknown"
            if status not in ("active", "lagging"):
                _decline(serverobservation)  # render() answers 4.03
                return
        self._observers[key].add(serverobservation)

        def cancel(key=key, obs=serverobservation) -> None:
            self._observers[key].discard(obs)
            if not self._observers[key]:
                self._observers.pop(key, None)

        serverobservation.accept(cancel)

    def notify(self, ev: GatewayEvent) -> None:
        """Called on the event loop for every gateway event."""
        if ev.kind in ("group.created", "member.added", "member.removed", "meter.revoked"):
            touched = set(ev.body.get("members", [])) | ({ev.meter_id} if ev.meter_id else set())
            for mid in touched:
                for obs in list(self._observers.get(("", mid), ())):
                    obs.trigger()  # re-render the meter resource: it lists the groups
        if ev.kind in ("meter.revoked", "member.removed"):
            for key in [k for k in self._observers if k[1] == ev.meter_id]:
                if ev.kind == "meter.revoked" or key[0] == ev.group_id:
                    for obs in list(self._observers.get(key, ())):
                        obs.trigger(_error(403, f"{ev.meter_id} was {ev.kind.split('.')[1]}"), is_last=True)
            return
        if ev.group_id is None or ev.data is None:
            return
        item = self.s.gateway.inbox_item(ev.kind, ev.body, ev.data)
        if item is None:
            return
        if item[0] == "s":
            if item[2] == "start":  # a new session: forget the previous one's messages
                for key in [k for k in self._messages if k[0] == ev.group_id]:
                    del self._messages[key]
            self._messages[(ev.group_id, item[2])] = (item[1], ev.data)
            self._last_ref[ev.group_id] = ["s", item[1], item[2], None]
        # aiocoap keeps only the newest pending notification per observer (RFC 7641 allows that), so
        # a reading right after a Start could hide the Start. Every notification therefore also names
        # the group's latest coordinator message; a member that missed it fetches it.
        payload = cbor2.dumps([ev.id, item, self._last_ref.get(ev.group_id)], canonical=True)
        for key, observers in list(self._observers.items()):
            if key[0] == ev.group_id:
                for obs in list(observers):
                    # A Message per observer: aiocoap stamps the remote, token and message ID onto
                    # the object it sends, and a shared one made the retransmission of one CON
                    # notification look up another observer's exchange (KeyError, no retransmit).
                    obs.trigger(aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=CBOR))

    # --- requests ---------------------------------------------------------------------------

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        """False for GET /session/{kind}: those immutable messages are cut into blocks by
        :func:`_block2`; aiocoap's Block2Cache would deep-copy the whole response for every block."""
        p = _sub_path(request)
        return not (
            request.code == Code.GET
            and len(p) == 4
            and p[0] == "groups"
            and p[2] == "session"
            and request.opt.block1 is None
        )

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            return await self._route(request)
        except GatewayError as exc:
            return _error(exc.status, exc.detail)
        except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
            return _error(400, f"bad request: {exc}")

    async def _route(self, req: aiocoap.Message) -> aiocoap.Message:
        p = list(_sub_path(req))
        code = req.code
        gw = self.s.gateway
        if len(req.payload) > MAX_BODY:
            return _error(413, f"request bodies are at most {MAX_BODY} bytes")
        match p, code:
            case ["gateway"], Code.GET:
                t = gw.trust
                return _cbor(
                    {
                        1: t.coordinator.gateway_id,
                        2: t.coordinator.certificate.public_bytes(Encoding.DER),
                        3: t.ca_cert.public_bytes(Encoding.DER),
                    }
                )
            case ["crl"], Code.GET:
                crl = await self.s.call(gw.crl)
                if crl is None:
                    return _error(404, "no local CA: revocation is published by the external CA")
                return aiocoap.Message(code=Code.CONTENT, payload=crl.public_bytes(Encoding.DER), content_format=42)
            case ["meters"], Code.POST:
                return _cbor(await self.s.call(gw.enroll_signed, req.payload), Code.CREATED)
            case ["meters", mid], Code.GET:
                return _cbor(await self.s.call(gw.get_meter, mid))
            case ["meters", mid, "groups", gid], Code.GET:
                # The first representation carries no item: observers fetch /session to catch up.
                status = await self.s.call(gw.member_status, gid, mid)
                if status not in ("active", "lagging"):
                    return _error(403, f"{mid} may not read {gid} ({status})")
                return _cbor([0, None])
            case ["groups", gid], Code.GET:
                return _cbor(await self.s.call(gw.get_group, gid))
            case ["groups", gid, "certs"], Code.GET:
                certs = await self.s.call(gw.group_certificates, gid)
                return _tagged([[c["meter_id"], c["role"], _pem_to_der(c["cert_pem"])] for c in certs])
            case ["groups", gid, "session"], Code.GET:
                return _tagged(await self.s.call(gw.session_messages, gid))
            case ["groups", gid, "session", kind], Code.GET:
                cached = self._messages.get((gid, kind))
                data = cached[1] if cached else await self.s.call(gw.session_message, gid, kind)
                return _block2(req, data, COSE_SIGN1)
            case ["groups", gid, "rounds"], Code.POST:
                fut = self.s.batcher.submit(gid, req.payload)
                outcome = await asyncio.wrap_future(fut)
                return aiocoap.Message(code=Code.CHANGED, payload=b"duplicate" if not outcome.accepted else b"")
            case ["groups", gid, "rejoin"], Code.POST:
                await self.s.call(gw.rejoin_signed, gid, req.payload)
                return aiocoap.Message(code=Code.CHANGED)
            case ["groups", gid, "refusal"], Code.POST:
                await self.s.call(gw.report_refusal, gid, req.payload)
                return aiocoap.Message(code=Code.CHANGED)
            case ["groups", gid, "data"], Code.POST:
                out = await self.s.call(gw.post_data, gid, req.payload)
                return _cbor(out, Code.CREATED)
            case ["groups", gid, "data"], Code.GET:
                after = _query_int(req, "after", 0)
                rows = await self.s.call(gw.data_since, gid, after, DATA_PAGE)
                return _tagged([[r["id"], r["sender"], r["data"]] for r in rows])
            case _, (Code.GET | Code.POST | Code.PUT | Code.DELETE | Code.FETCH | Code.PATCH):
                if self._known_path(p):
                    return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED, payload=b"method not allowed here")
                return _error(404, "no such resource")
        return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED, payload=b"method not allowed")

    @staticmethod
    def _known_path(p: list[str]) -> bool:
        shapes = [
            ["gateway"],
            ["crl"],
            ["meters"],
            ["meters", "*"],
            ["meters", "*", "groups", "*"],
            ["groups", "*"],
            ["groups", "*", "certs"],
            ["groups", "*", "session"],
            ["groups", "*", "session", "*"],
            ["groups", "*", "rounds"],
            ["groups", "*", "rejoin"],
            ["groups", "*", "refusal"],
            ["groups", "*", "data"],
        ]
        return any(len(s) == len(p) and all(a in ("*", b) for a, b in zip(s, p, strict=True)) for s in shapes)

    def get_resources_as_linkheader(self):
        links = [
            ("/gateway", {"rt": "gridkey.gateway", "ct": "60"}),
            ("/crl", {"rt": "gridkey.crl"}),
            ("/meters", {"rt": "gridkey.enrol", "ct": "18"}),
            ("/meters/{m}/groups/{g}", {"rt": "gridkey.inbox", "obs": None, "ct": "60"}),
            ("/groups/{g}", {"rt": "gridkey.group", "ct": "60"}),
            ("/groups/{g}/certs", {"rt": "gridkey.certs", "ct": "60"}),
            ("/groups/{g}/session", {"rt": "gridkey.session", "ct": "60"}),
            ("/groups/{g}/rounds", {"rt": "gridkey.rounds", "ct": "18"}),
            ("/groups/{g}/rejoin", {"rt": "gridkey.rejoin", "ct": "18"}),
            ("/groups/{g}/refusal", {"rt": "gridkey.refusal", "ct": "18"}),
            ("/groups/{g}/data", {"rt": "gridkey.data", "ct": "16"}),
        ]
        return resource.LinkFormat([resource.Link(href, **attrs) for href, attrs in links])


def _block2(req: aiocoap.Message, payload: bytes, content_format: int) -> aiocoap.Message:
    """The block of ``payload`` a GET asks for (RFC 7959 Block2), or all of it when it fits one block.

    Only for payloads that do not change while a client walks its blocks (coordinator messages:
    a new session replaces them, and a member that mixed blocks across sessions fails the
    signature check and fetches again)."""
    b2 = req.opt.block2
    szx = min(b2.size_exponent if b2 is not None else 6, req.remote.maximum_block_size_exp, 6)  # no BERT
    size = 1 << (szx + 4)
    if b2 is None and len(payload) <= size:
        return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=content_format)
    num = b2.block_number if b2 is not None else 0
    start = num * size
    if start >= len(payload) and start > 0:
        return _error(400, f"block {num} is past the end ({len(payload)} bytes)")
    more = start + size < len(payload)
    return aiocoap.Message(
        code=Code.CONTENT, payload=payload[start : start + size], content_format=content_format, block2=(num, more, szx)
    )


class _Context(aiocoap.Context):
    """aiocoap's server context without its eager ``"Rendering for %r" % request`` task name.

    Formatting the request (its remote address goes through ``ipaddress``) for a name nobody reads
    was ~14 % of the sidecar's CPU in a rekey of 25 meters (py-spy). Same body as aiocoap 0.4.17's
    ``Context.render_to_pipe`` otherwise."""

    def render_to_pipe(self, pipe) -> None:
        run_driving_pipe(error_to_message(pipe, self.log), self._render_to_pipe(pipe), name="gridkey render")


def _sub_path(req: aiocoap.Message) -> tuple[str, ...]:
    """The path below /gk: :class:`_Site` hands requests over unstripped (see there)."""
    path = req.opt.uri_path
    return path[1:] if path[:1] == ("gk",) else path


class _Site(resource.Site):
    """A Site that passes /gk/... requests to :class:`GkResource` as received.

    ``resource.Site`` deep-copies every request to strip the path prefix for the child (aiocoap
    0.4, ``_find_child_and_pathstripped_message``); measured with py-spy during a rekey of 25
    meters that copy was ~16 % of the sidecar's CPU. GkResource reads its path through
    :func:`_sub_path` instead. Everything else (/.well-known/core) takes the normal route.
    """

    def __init__(self, gk: GkResource) -> None:
        super().__init__()
        self._gk = gk
        self.add_resource(["gk"], gk)  # listed in /.well-known/core as before

    async def render_to_pipe(self, pipe):
        req = pipe.request
        if req.opt.uri_path[:1] == ("gk",) and getattr(req.opt, "uri_path_abbrev", None) is None:
            return await self._gk.render_to_pipe(pipe)
        return await super().render_to_pipe(pipe)


def _decline(serverobservation) -> None:
    """Answer without establishing an observation.

    aiocoap 0.4 calls the cancellation callback of every observation attempt when the response
    is sent, accepted or not; accepting with a no-op and deregistering at once is the clean way
    to say "a plain response, no notifications".
    """
    serverobservation.accept(lambda: None)
    serverobservation.deregister()


def _query_int(req: aiocoap.Message, name: str, default: int) -> int:
    for q in req.opt.uri_query:
        k, _, v = q.partition("=")
        if k == name:
            if not v.isdigit() or len(v) > 18:
                raise Invalid(f"query parameter {name} must be a non-negative integer")
            return int(v)
    return default


def _pem_to_der(pem: str) -> bytes:
    from ..crypto.identity import load_certificate

    return load_certificate(pem.encode()).public_bytes(Encoding.DER)


class CoapServer:
    """The CoAP side of a sidecar: an aiocoap server context bound to ``bind``."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        batcher: Batcher | None = None,
        bind: tuple[str, int] = ("127.0.0.1", 5683),
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.gateway = gateway
        self.batcher = batcher or Batcher(gateway)
        self.bind = bind
        self._executor = executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="gridkey-coap")
        self._context: aiocoap.Context | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.gk = GkResource(self)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def call(self, fn, *args, **kwargs):
        assert self.loop is not None
        return await self.loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        site = _Site(self.gk)
        site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
        # CoAP over UDP only: aiocoap would also listen for CoAP over TCP (and TLS/WebSockets where
        # available) on the same port number - attack surface no meter uses, and a second port to
        # collide with.
        self._context = await _Context.create_server_context(site, bind=self.bind, transports=["udp6"])
        reject_undecodable_strings(self._context)
        loop = self.loop

        def on_event(ev: GatewayEvent) -> None:
            loop.call_soon_threadsafe(self.gk.notify, ev)

        self._unsubscribe = self.gateway.hub.subscribe(on_event)
        log.info("CoAP listening on coap://%s:%d", *self.bind)

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._context is not None:
            await self._context.shutdown()
        self._executor.shutdown(wait=False, cancel_futures=True)
