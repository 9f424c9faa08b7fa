"""How a meter talks to its gateway: CoAP (default) or HTTP, behind one small async interface.

The meter is a separate party: it uses the protocol core and its own client here, never the
gateway package. Both links speak the same resources (see ``gridkey.transports.coap`` and the
REST API's meter endpoints); the agent does not know which one it has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiocoap
import cbor2
import httpx
from aiocoap.numbers.codes import Code
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..aiocoap_workarounds import reject_undecodable_strings
from ..protocol.events import BROADCAST_KINDS

REQUEST_TIMEOUT_S = 20.0
MAX_RESPONSE = 1 << 20  # a response assembled from Block2 blocks (a round-2 bundle of 1,000 is ~150 KB)


def _loads(data: bytes) -> Any:
    """CBOR from the gateway. Plain CoAP is unauthenticated, so a reply may be forged: a body that is
    not CBOR is a LinkError like any other failed exchange, never an exception that kills a task."""
    try:
        return cbor2.loads(data)
    except Exception as exc:
        raise LinkError(502, f"malformed reply from the gateway: {type(exc).__name__}") from None


def _group_ids(info: Any) -> list[str]:
    """The group ids of a meter resource ``{"groups": [{"group_id": ...}, ...], ...}``; any other
    shape (a forged reply: plain CoAP is unauthenticated) is a LinkError, not a crash."""
    groups = info.get("groups", []) if isinstance(info, dict) else None
    well_formed = isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("group_id"), str) for g in groups
    )
    if not well_formed:
        raise LinkError(502, "malformed meter resource from the gateway")
    return [g["group_id"] for g in groups]


def _inbox_item(obj: Any) -> list | None:
    """One inbox item as the gateway shapes it (``["s", sid, kind, message|None]`` or ``["d", id,
    message|None]``, or None in a first answer); any other shape (a tampered or forged notification:
    plain CoAP is unauthenticated) is a LinkError, so the agent re-observes instead of crashing."""
    if obj is None:
        return None
    if isinstance(obj, list) and obj and obj[0] == "s" and len(obj) == 4:
        _, sid, kind, data = obj
        if isinstance(sid, bytes) and kind in BROADCAST_KINDS and (data is None or isinstance(data, bytes)):
            return obj
    if isinstance(obj, list) and obj and obj[0] == "d" and len(obj) == 3:
        _, msg_id, data = obj
        if type(msg_id) is int and (data is None or isinstance(data, bytes)):
            return obj
    raise LinkError(502, "malformed inbox item from the gateway")


def _rows(obj: Any, types: tuple[type, ...], what: str) -> list[tuple]:
    """A list of fixed-shape rows (``[[int, str, bytes], ...]``) from the gateway; any other shape
    is a LinkError (plain CoAP is unauthenticated: a reply may be forged or glued from two renderings)."""
    ok = isinstance(obj, list) and all(
        isinstance(r, list) and len(r) == len(types) and all(type(v) is t for v, t in zip(r, types, strict=True))
        for r in obj
    )
    if not ok:
        raise LinkError(502, f"malformed {what} from the gateway")
    return [tuple(r) for r in obj]


class LinkError(Exception):
    """The gateway refused a request (4.xx) or could not be reached."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Link(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def gateway_info(self) -> tuple[str, bytes, bytes]: ...
    async def enroll(self, request: bytes) -> dict: ...
    async def meter_groups(self, meter_id: str) -> list[str]: ...
    def watch_groups(self, meter_id: str) -> AsyncIterator[list[str]]: ...
    async def certs(self, group_id: str) -> list[tuple[str, str, bytes]]: ...
    async def crl(self) -> bytes | None: ...
    async def session(self, group_id: str) -> list[bytes]: ...
    async def session_kind(self, group_id: str, kind: str) -> bytes: ...
    async def post_round(self, group_id: str, data: bytes) -> bool: ...
    async def rejoin(self, group_id: str, request: bytes) -> None: ...
    async def report_refusal(self, group_id: str, request: bytes) -> None: ...
    async def post_data(self, group_id: str, data: bytes) -> dict: ...
    async def data_since(self, group_id: str, after: int) -> list[tuple[int, str, bytes]]: ...
    def inbox(self, meter_id: str, group_id: str) -> AsyncIterator[tuple[int, list | None]]: ...


_CODE_STATUS = {
    Code.BAD_REQUEST: 400,
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.CONFLICT: 409,
    Code.REQUEST_ENTITY_TOO_LARGE: 413,
}


def coap_wire_bytes(msg: aiocoap.Message) -> int:
    """CoAP bytes a message occupies on the wire (UDP/IP headers excluded), block-wise included.

    Header (4) + token + encoded options + payload marker + payload; every 1024-byte block
    repeats the header and options. Computed without copying the message (aiocoap's copy is deep).
    """
    try:
        head = 4 + len(msg.token or b"") + len(msg.opt.encode())
    except Exception:  # an option aiocoap cannot encode on its own: count the payload only
        return len(msg.payload)
    blocks = max(1, -(-len(msg.payload) // 1024))
    return blocks * (head + (1 if msg.payload else 0)) + len(msg.payload)


def _shielded(fut: asyncio.Future) -> asyncio.Future:
    """``fut`` protected from our timeouts' cancellation; its late outcome is retrieved, not logged."""
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return asyncio.shield(fut)


async def _shutdown_quietly(ctx: aiocoap.Context) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ctx.shutdown(), REQUEST_TIMEOUT_S)


class CoapLink:
    """One aiocoap client context (its own UDP socket) per meter."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.ctx: aiocoap.Context | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self._remote = None  # the gateway's resolved address, once known
        self.reopened = 0  # contexts replaced after a timeout (see _reopen)
        self._retiring: set[asyncio.Task] = set()

    async def open(self) -> None:
        self.ctx = await aiocoap.Context.create_client_context()
        reject_undecodable_strings(self.ctx)

    def _message(self, code: Code, path: str, payload: bytes = b"", query: str = "", **kw) -> aiocoap.Message:
        """A request to ``/gk/<path>``. Once the gateway's address is resolved it is reused: aiocoap
        otherwise resolves the URI's host in a thread for every request, which costs ~40%."""
        if self._remote is None:
            uri = f"{self.base}/gk/{path}" + (f"?{query}" if query else "")
            return aiocoap.Message(code=code, uri=uri, payload=payload, **kw)
        msg = aiocoap.Message(
            code=code,
            uri_path=("gk", *path.split("/")),
            uri_query=tuple(q for q in query.split("&") if q),
            payload=payload,
            **kw,
        )
        msg.remote = self._remote
        return msg

    async def close(self) -> None:
        if self.ctx is not None:
            await self.ctx.shutdown()
            self.ctx = None
        for t in list(self._retiring):
            t.cancel()

    async def _reopen(self, failed: aiocoap.Context) -> None:
        """Replace a context whose request timed out by a fresh one: a new UDP port and a new random
        message-ID sequence. Without DTLS an on-path attacker can predict the next message IDs and
        poison the server's deduplication cache with them; the server then answers our real requests
        from that cache (wrong token) and aiocoap's one-exchange-at-a-time queue stalls every later
        request of this context. A timeout is the only symptom we see, so it is the trigger. The old
        context is shut down in the background; its observations end and the agent re-registers them."""
        if self.ctx is not failed:  # a concurrent request already replaced it
            return
        self.ctx = await aiocoap.Context.create_client_context()
        reject_undecodable_strings(self.ctx)
        self.reopened += 1
        task = asyncio.create_task(_shutdown_quietly(failed))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _req(self, code: Code, path: str, payload: bytes = b"", query: str = "") -> aiocoap.Message:
        if code == Code.GET:
            return await self._get(path, query)
        # aiocoap's block-wise wrapper (and the repr of the request it formats for a task name) only
        # for bodies that need Block1; round messages are ~150 bytes.
        return await self._exchange(self._message(code, path, payload, query), blockwise=len(payload) > 1024)

    async def _exchange(self, msg: aiocoap.Message, *, blockwise: bool) -> aiocoap.Message:
        assert self.ctx is not None, "open() the link first"
        ctx = self.ctx
        try:
            # shield: aiocoap 0.4.17 does not expect its response future to be cancelled and raises
            # InvalidStateError into its receive path when the answer arrives after our timeout.
            response = ctx.request(msg, handle_blockwise=blockwise).response
            resp = await asyncio.wait_for(_shielded(response), REQUEST_TIMEOUT_S)
        except (TimeoutError, aiocoap.error.Error, OSError) as exc:
            await self._reopen(ctx)
            raise LinkError(503, f"gateway unreachable: {type(exc).__name__}") from None
        if self._remote is None:
            self._remote = resp.remote
        self.bytes_sent += coap_wire_bytes(msg)
        self.bytes_received += coap_wire_bytes(resp)
        if not resp.code.is_successful():
            raise LinkError(_CODE_STATUS.get(resp.code, 400), resp.payload.decode("utf-8", "replace"))
        return resp

    async def _get(self, path: str, query: str) -> aiocoap.Message:
        """A GET whose Block2 blocks (RFC 7959) are walked here rather than by aiocoap, whose
        BlockwiseRequest deep-copies the request for every block (~19 % of the fleet's CPU in a
        rekey of 25 meters, measured with py-spy). Blocks must come in order with one ETag."""
        first = await self._exchange(self._message(Code.GET, path, query=query), blockwise=False)
        b2 = first.opt.block2
        if b2 is None or not b2.more:
            return first
        if b2.block_number != 0:
            raise LinkError(502, "the first block of a response is not block 0")
        payload = bytearray(first.payload)
        while b2.more:
            if len(payload) > MAX_RESPONSE:
                raise LinkError(413, f"response larger than {MAX_RESPONSE} bytes")
            num = b2.block_number + 1
            resp = await self._exchange(
                self._message(Code.GET, path, query=query, block2=(num, False, b2.size_exponent)), blockwise=False
            )
            b2 = resp.opt.block2
            if b2 is None or b2.block_number != num or resp.opt.etag != first.opt.etag:
                raise LinkError(502, "the response changed or broke off while it was fetched block by block")
            payload += resp.payload
        first.payload = bytes(payload)
        first.opt.block2 = None
        return first

    async def _cbor(self, path: str, query: str = "") -> Any:
        return _loads((await self._req(Code.GET, path, query=query)).payload)

    async def gateway_info(self) -> tuple[str, bytes, bytes]:
        info = await self._cbor("gateway")
        shape = isinstance(info, dict) and [type(info.get(k)) for k in (1, 2, 3)]
        if shape != [str, bytes, bytes]:
            raise LinkError(502, "malformed gateway resource from the gateway")
        return info[1], info[2], info[3]

    async def enroll(self, request: bytes) -> dict:
        return _loads((await self._req(Code.POST, "meters", request)).payload)

    async def meter_groups(self, meter_id: str) -> list[str]:
        info = await self._cbor(f"meters/{meter_id}")
        return _group_ids(info)

    async def certs(self, group_id: str) -> list[tuple[str, str, bytes]]:
        return _rows(await self._cbor(f"groups/{group_id}/certs"), (str, str, bytes), "certificate list")  # type: ignore[return-value]

    async def crl(self) -> bytes | None:
        try:
            return (await self._req(Code.GET, "crl")).payload
        except LinkError as exc:
            if exc.status == 404:
                return None
            raise

    async def session(self, group_id: str) -> list[bytes]:
        messages = await self._cbor(f"groups/{group_id}/session")
        if not (isinstance(messages, list) and all(type(m) is bytes for m in messages)):
            raise LinkError(502, "malformed session from the gateway")
        return messages

    async def session_kind(self, group_id: str, kind: str) -> bytes:
        return (await self._req(Code.GET, f"groups/{group_id}/session/{kind}")).payload

    async def post_round(self, group_id: str, data: bytes) -> bool:
        resp = await self._req(Code.POST, f"groups/{group_id}/rounds", data)
        return resp.payload != b"duplicate"

    async def rejoin(self, group_id: str, request: bytes) -> None:
        await self._req(Code.POST, f"groups/{group_id}/rejoin", request)

    async def report_refusal(self, group_id: str, request: bytes) -> None:
        await self._req(Code.POST, f"groups/{group_id}/refusal", request)

    async def post_data(self, group_id: str, data: bytes) -> dict:
        return _loads((await self._req(Code.POST, f"groups/{group_id}/data", data)).payload)

    async def data_since(self, group_id: str, after: int) -> list[tuple[int, str, bytes]]:
        rows = await self._cbor(f"groups/{group_id}/data", f"after={after}")
        return _rows(rows, (int, str, bytes), "data list")  # type: ignore[return-value]

    async def watch_groups(self, meter_id: str) -> AsyncIterator[list[str]]:
        """Observe the meter resource; yields its group ids now and whenever they change."""
        async for info in self._observe(f"meters/{meter_id}"):
            yield _group_ids(info)

    async def inbox(self, meter_id: str, group_id: str) -> AsyncIterator[tuple[int, list | None]]:
        """Observe the member resource; yields (event id, item). Ends (LinkError) when refused.

        A notification also names the group's newest coordinator message; it is yielded as a second
        item (without the message) so the agent fetches it if an overwritten notification hid it.
        """
        async for note in self._observe(f"meters/{meter_id}/groups/{group_id}"):
            if not isinstance(note, list) or len(note) not in (2, 3) or type(note[0]) is not int:
                raise LinkError(502, "malformed notification")
            latest = _inbox_item(note[2]) if len(note) > 2 else None
            yield note[0], _inbox_item(note[1])
            if latest is not None and latest != note[1]:
                yield note[0], latest

    async def _observe(self, path: str) -> AsyncIterator[Any]:
        assert self.ctx is not None
        pr = self.ctx.request(self._message(Code.GET, path, observe=0))
        try:
            first = await asyncio.wait_for(_shielded(pr.response), REQUEST_TIMEOUT_S)  # see _exchange
        except (TimeoutError, aiocoap.error.Error, OSError) as exc:
            raise LinkError(503, f"gateway unreachable: {type(exc).__name__}") from None
        if not first.code.is_successful():
            raise LinkError(_CODE_STATUS.get(first.code, 400), first.payload.decode("utf-8", "replace"))
        yield _loads(first.payload)
        try:
            async for resp in pr.observation:
                self.bytes_received += coap_wire_bytes(resp)
                if not resp.code.is_successful():
                    raise LinkError(_CODE_STATUS.get(resp.code, 400), resp.payload.decode("utf-8", "replace"))
                yield _loads(resp.payload)
        except aiocoap.error.Error as exc:
            raise LinkError(503, f"observation ended: {exc}") from None
        finally:
            if not pr.observation.cancelled:
                pr.observation.cancel()


class HttpLink:
    """The REST API's meter-facing endpoints; the inbox is a long poll."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.client: httpx.AsyncClient | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    async def open(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=40.0))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _req(self, method: str, path: str, content: bytes | None = None, params=None) -> httpx.Response:
        assert self.client is not None, "open() the link first"
        headers = {"content-type": "application/cose"} if content is not None else {}
        self.bytes_sent += len(content or b"")
        try:
            resp = await self.client.request(method, f"/v1/{path}", content=content, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise LinkError(503, f"gateway unreachable: {type(exc).__name__}") from None
        self.bytes_received += len(resp.content)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise LinkError(resp.status_code, detail)
        return resp

    async def gateway_info(self) -> tuple[str, bytes, bytes]:
        info = (await self._req("GET", "gateway")).json()
        der = [
            x509.load_pem_x509_certificate(info[k].encode()).public_bytes(Encoding.DER) for k in ("cert_pem", "ca_pem")
        ]
        return info["gateway_id"], der[0], der[1]

    async def enroll(self, request: bytes) -> dict:
        return (await self._req("POST", "enroll", request)).json()

    async def meter_groups(self, meter_id: str) -> list[str]:
        return (await self._req("GET", f"meters/{meter_id}/groups")).json()["groups"]

    async def certs(self, group_id: str) -> list[tuple[str, str, bytes]]:
        out = []
        for c in (await self._req("GET", f"groups/{group_id}/certs")).json():
            der = x509.load_pem_x509_certificate(c["cert_pem"].encode()).public_bytes(Encoding.DER)
            out.append((c["meter_id"], c["role"], der))
        return out

    async def crl(self) -> bytes | None:
        try:
            return (await self._req("GET", "crl")).content
        except LinkError as exc:
            if exc.status == 404:
                return None
            raise

    async def session(self, group_id: str) -> list[bytes]:
        return _loads((await self._req("GET", f"groups/{group_id}/session")).content)

    async def session_kind(self, group_id: str, kind: str) -> bytes:
        return (await self._req("GET", f"groups/{group_id}/session/{kind}")).content

    async def post_round(self, group_id: str, data: bytes) -> bool:
        resp = await self._req("POST", f"groups/{group_id}/rounds", data)
        return resp.status_code == 204

    async def rejoin(self, group_id: str, request: bytes) -> None:
        await self._req("POST", f"groups/{group_id}/rejoin", request)

    async def report_refusal(self, group_id: str, request: bytes) -> None:
        await self._req("POST", f"groups/{group_id}/refusal", request)

    async def post_data(self, group_id: str, data: bytes) -> dict:
        return (await self._req("POST", f"groups/{group_id}/data", data)).json()

    async def data_since(self, group_id: str, after: int) -> list[tuple[int, str, bytes]]:
        rows = _loads((await self._req("GET", f"groups/{group_id}/data", params={"after": after})).content)
        return _rows(rows, (int, str, bytes), "data list")  # type: ignore[return-value]

    async def watch_groups(self, meter_id: str) -> AsyncIterator[list[str]]:
        """HTTP has no Observe: poll the meter's groups every few seconds."""
        while True:
            yield await self.meter_groups(meter_id)
            await asyncio.sleep(2.0)

    async def inbox(self, meter_id: str, group_id: str) -> AsyncIterator[tuple[int, list | None]]:
        cursor = -1
        while True:
            params = {"after": max(cursor, 0), "wait": 0 if cursor < 0 else 20}
            resp = await self._req("GET", f"meters/{meter_id}/groups/{group_id}/inbox", params=params)
            body = _loads(resp.content)
            if not (isinstance(body, dict) and type(body.get("cursor")) is int and isinstance(body.get("items"), list)):
                raise LinkError(502, "malformed inbox from the gateway")
            items = [_inbox_item(item) for item in body["items"]]  # all checked before any is acted on
            if cursor < 0:
                cursor = body["cursor"]
                yield cursor, None  # like the CoAP link: the first answer carries no item
                continue
            for item in items:
                yield body["cursor"], item
            cursor = body["cursor"]
