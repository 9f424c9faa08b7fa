"""An LwM2M 1.1 client endpoint on aiocoap (there is no maintained Python LwM2M client).

Device side of the LwM2M interfaces over CoAP/UDP (binding ``U``, no security: the sidecar and the
LwM2M server share a trusted network segment — see docs/lwm2m.md):

* Registration: Register (``POST /rd?ep=&lt=&lwm2m=1.1&b=U`` + link format), Update before the
  lifetime runs out (and whenever the set of object instances changes), De-register; a 4.04 on
  Update means the server forgot us (e.g. it restarted) and we register again.
* Device management: Read, Discover (``Accept: application/link-format``), Write (PUT replace,
  POST partial update), Write-Attributes (``PUT ?pmin=&pmax=``), Execute, Create, Delete.
* Information reporting: Observe, with notifications on change, no more often than ``pmin`` and at
  least every ``pmax`` seconds.

Every endpoint has its own UDP socket (one aiocoap context, used to register and to serve). The
object providers are blocking (they ask the gateway); they run on an executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code

from . import codecs
from .model import Lwm2mError, Provider
from .objects import GRIDKEY_OBJECTS, STANDARD_OBJECTS, ObjectDef, Operations, ResourceType

log = logging.getLogger(__name__)

DEFAULT_FORMAT = codecs.TLV
ATTRIBUTES = ("pmin", "pmax", "gt", "lt", "st", "epmin", "epmax")
_CODES = {
    "4.00": Code.BAD_REQUEST,
    "4.01": Code.UNAUTHORIZED,
    "4.03": Code.FORBIDDEN,
    "4.04": Code.NOT_FOUND,
    "4.05": Code.METHOD_NOT_ALLOWED,
    "4.06": Code.NOT_ACCEPTABLE,
    "4.13": Code.REQUEST_ENTITY_TOO_LARGE,
    "4.15": Code.UNSUPPORTED_CONTENT_FORMAT,
}
ALL_OBJECTS: dict[int, ObjectDef] = {**STANDARD_OBJECTS, **GRIDKEY_OBJECTS}
VERSIONS = {3: "1.1", 3305: "1.1"}  # without ver, Leshan would pick the 1.0 models


def schema(oid: int, rid: int):
    return ALL_OBJECTS[oid].resource(rid)


def _error(code: str, detail: str) -> aiocoap.Message:
    return aiocoap.Message(code=_CODES.get(code, Code.BAD_REQUEST), payload=detail[:200].encode())


@dataclass
class _Observation:
    path: tuple[int, ...]
    fmt: int
    obs: Any
    last: bytes = b""
    last_sent: float = field(default_factory=time.monotonic)


class ObjectTree(resource.ObservableResource):
    """The root resource of an endpoint: routes /o/i/r paths to providers."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.ep = endpoint
        self.observations: list[_Observation] = []
        self.attributes: dict[tuple[int, ...], dict[str, str]] = {}

    async def needs_blockwise_assembly(self, request) -> bool:
        return True

    # --- observe ----------------------------------------------------------------------------

    async def add_observation(self, request, serverobservation) -> None:
        try:
            path = codecs.parse_path("/" + "/".join(request.opt.uri_path))
        except codecs.CodecError:
            serverobservation.accept(lambda: None)
            serverobservation.deregister()
            return
        if not path or request.opt.accept == codecs.LINK:
            serverobservation.accept(lambda: None)
            serverobservation.deregister()
            return
        entry = _Observation(
            path, request.opt.accept if request.opt.accept is not None else DEFAULT_FORMAT, serverobservation
        )
        self.observations.append(entry)

        def cancel() -> None:
            if entry in self.observations:
                self.observations.remove(entry)

        serverobservation.accept(cancel)

    async def refresh(self, *, periodic: bool = False) -> None:
        """Re-read every observed path; notify where the value changed (or pmax is due)."""
        now = time.monotonic()
        for entry in list(self.observations):
            attrs = self._attrs_for(entry.path)
            pmin = float(attrs.get("pmin", 0) or 0)
            pmax = float(attrs.get("pmax", 0) or 0)
            if now - entry.last_sent < pmin:
                continue
            try:
                payload = await self.ep.read_encoded(entry.path, entry.fmt)
            except (Lwm2mError, codecs.CodecError):
                payload = b""
            due = periodic and pmax > 0 and now - entry.last_sent >= pmax
            if payload != entry.last or due:
                entry.last = payload
                entry.last_sent = now
                entry.obs.trigger()

    def _attrs_for(self, path: tuple[int, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for n in range(1, len(path) + 1):  # attributes inherit from object to instance to resource
            out.update(self.attributes.get(path[:n], {}))
        return out

    # --- requests ---------------------------------------------------------------------------

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            path = codecs.parse_path("/" + "/".join(request.opt.uri_path)) if request.opt.uri_path else ()
        except codecs.CodecError as exc:
            return _error("4.04", str(exc))
        try:
            return await self._dispatch(request, path)
        except Lwm2mError as exc:
            return _error(exc.code, exc.detail)
        except codecs.UnknownResourceError as exc:
            return _error("4.04", str(exc))
        except codecs.UnsupportedFormatError as exc:
            return _error("4.06" if request.code == Code.GET else "4.15", str(exc))
        except codecs.CodecError as exc:
            return _error("4.00", str(exc))

    async def _dispatch(self, req: aiocoap.Message, path: tuple[int, ...]) -> aiocoap.Message:
        ep = self.ep
        if not path:
            raise Lwm2mError("4.04", "no resource at /")
        code = req.code
        if code == Code.GET:
            if req.opt.accept == codecs.LINK:
                return aiocoap.Message(
                    code=Code.CONTENT, payload=(await ep.discover(path)).encode(), content_format=codecs.LINK
                )
            fmt = req.opt.accept if req.opt.accept is not None else DEFAULT_FORMAT
            payload = await ep.read_encoded(path, fmt)
            for entry in self.observations:  # the first notification baseline
                if entry.path == path and entry.fmt == fmt and not entry.last:
                    entry.last = payload
            return aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=fmt)
        if code == Code.PUT:
            query = [q for q in req.opt.uri_query]
            if query and not req.payload:
                self._write_attributes(path, query)
                return aiocoap.Message(code=Code.CHANGED)
            await ep.write(path, req.payload, req.opt.content_format, replace=True)
            return aiocoap.Message(code=Code.CHANGED)
        if code == Code.POST:
            if len(path) == 1:
                iid = await ep.create(path[0], req.payload, req.opt.content_format)
                return aiocoap.Message(code=Code.CREATED, location_path=(str(path[0]), str(iid)))
            if len(path) == 2:
                await ep.write(path, req.payload, req.opt.content_format, replace=False)
                return aiocoap.Message(code=Code.CHANGED)
            if len(path) == 3:
                await ep.execute(path, req.payload)
                return aiocoap.Message(code=Code.CHANGED)
            raise Lwm2mError("4.05", "POST is not defined on a resource instance")
        if code == Code.DELETE:
            if len(path) != 2:
                raise Lwm2mError("4.05", "only object instances can be deleted")
            await ep.delete(path)
            return aiocoap.Message(code=Code.DELETED)
        raise Lwm2mError("4.05", f"{code} is not an LwM2M operation")

    def _write_attributes(self, path: tuple[int, ...], query: list[str]) -> None:
        attrs = dict(self.attributes.get(path, {}))
        for q in query:
            name, _, value = q.partition("=")
            if name not in ATTRIBUTES:
                raise Lwm2mError("4.00", f"unknown attribute {name!r}")
            if value == "":
                attrs.pop(name, None)
                continue
            try:
                if float(value) < 0:
                    raise ValueError
            except ValueError:
                raise Lwm2mError("4.00", f"attribute {name} must be a non-negative number") from None
            attrs[name] = value
        if "pmin" in attrs and "pmax" in attrs and float(attrs["pmax"]) < float(attrs["pmin"]):
            raise Lwm2mError("4.00", "pmax must not be smaller than pmin")
        self.attributes[path] = attrs


class Endpoint:
    """One registered LwM2M client endpoint (e.g. one meter) and the objects it serves."""

    def __init__(
        self,
        name: str,
        providers: dict[int, Provider],
        server: str,
        *,
        lifetime: int = 60,
        executor: Executor | None = None,
        bind_host: str = "127.0.0.1",
        actor: str = "lwm2m",
        on_registered: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.providers = providers
        self.server = server.rstrip("/")
        self.lifetime = lifetime
        self.executor = executor
        self.bind_host = bind_host
        self.actor = actor
        self.on_registered = on_registered or (lambda name: None)
        self.location: tuple[str, ...] | None = None
        self.tree = ObjectTree(self)
        self.ctx: aiocoap.Context | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._links_sent = ""
        self.registrations = 0
        self.updates = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        # UDP only (LwM2M's "U" binding); see CoapServer.start.
        self.ctx = await aiocoap.Context.create_server_context(self.tree, bind=(self.bind_host, 0), transports=["udp6"])
        self._task = asyncio.create_task(self._registration_loop(), name=f"lwm2m-{self.name}")

    async def stop(self, deregister: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if deregister and self.location and self.ctx is not None:
            with contextlib.suppress(Exception):
                msg = aiocoap.Message(code=Code.DELETE, uri=f"{self.server}/{'/'.join(self.location)}")
                await asyncio.wait_for(self.ctx.request(msg).response, 5)
        self.location = None
        if self.ctx is not None:
            await self.ctx.shutdown()
            self.ctx = None

    def changed(self) -> None:
        """Object instances may have changed: send an Update with the new links soon."""
        self._wake.set()

    async def _call(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args))

    async def links(self) -> str:
        objects = {}
        for oid, p in self.providers.items():
            objects[oid] = await self._call(p.instances)
        return codecs.link_format(
            codecs.registration_links(objects, content_format=codecs.SENML_CBOR, versions=VERSIONS)
        )

    async def _registration_loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                if self.location is None:
                    await self._register()
                else:
                    await self._update()
                backoff = 1.0
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # Update well before the lifetime runs out (and at once when objects change).
                    await asyncio.wait_for(self._wake.wait(), max(1.0, self.lifetime * 0.7))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("lwm2m %s: registration failed (%s); retrying in %.0f s", self.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _request(self, msg: aiocoap.Message) -> aiocoap.Message:
        assert self.ctx is not None
        return await asyncio.wait_for(self.ctx.request(msg).response, 30)

    async def _register(self) -> None:
        links = await self.links()
        msg = aiocoap.Message(
            code=Code.POST,
            uri=f"{self.server}/rd?ep={self.name}&lt={self.lifetime}&lwm2m=1.1&b=U",
            payload=links.encode(),
            content_format=codecs.LINK,
        )
        resp = await self._request(msg)
        if resp.code != Code.CREATED:
            raise RuntimeError(f"register answered {resp.code}: {resp.payload[:100]!r}")
        self.location = tuple(resp.opt.location_path)
        self._links_sent = links
        self.registrations += 1
        log.info("lwm2m %s registered at /%s", self.name, "/".join(self.location))
        self.on_registered(self.name)

    async def _update(self) -> None:
        assert self.location is not None
        links = await self.links()
        payload = links.encode() if links != self._links_sent else b""
        msg = aiocoap.Message(
            code=Code.POST,
            uri=f"{self.server}/{'/'.join(self.location)}",
            payload=payload,
            content_format=codecs.LINK if payload else None,
        )
        resp = await self._request(msg)
        if resp.code == Code.NOT_FOUND:  # the server no longer knows us: register again
            self.location = None
            await self._register()
            return
        if resp.code != Code.CHANGED:
            raise RuntimeError(f"update answered {resp.code}")
        self._links_sent = links
        self.updates += 1

    # --- operations -------------------------------------------------------------------------

    def _provider(self, oid: int) -> Provider:
        p = self.providers.get(oid)
        if p is None:
            raise Lwm2mError("4.04", f"no object {oid}")
        return p

    async def node(self, path: tuple[int, ...]) -> codecs.Node:
        p = self._provider(path[0])
        definition = p.definition
        iids = await self._call(p.instances)
        if len(path) == 1:
            instances = [await self._instance(p, i) for i in iids]
            return codecs.Object(path[0], tuple(instances))
        if path[1] not in iids:
            raise Lwm2mError("4.04", f"no instance {codecs.format_path(path[:2])}")
        inst = await self._instance(p, path[1])
        if len(path) == 2:
            return inst
        res = inst.resource(path[2])
        if res is None:
            try:
                rdef = definition.resource(path[2])
            except KeyError:
                raise Lwm2mError("4.04", f"no resource {codecs.format_path(path)}") from None
            if not rdef.operations.readable:
                raise Lwm2mError("4.05", f"{codecs.format_path(path)} is not readable")
            raise Lwm2mError("4.04", f"no value at {codecs.format_path(path)}")
        if len(path) == 3:
            return res
        if not isinstance(res, codecs.MultiResource) or path[3] not in res.instances:
            raise Lwm2mError("4.04", f"no resource instance {codecs.format_path(path)}")
        return codecs.ResourceInstance(path[3], res.type, res.instances[path[3]])

    async def _instance(self, p: Provider, iid: int) -> codecs.ObjectInstance:
        values = await self._call(p.read, iid)
        resources: list[codecs.Resource | codecs.MultiResource] = []
        for rdef in p.definition.resources:
            if rdef.id not in values or not rdef.operations.readable:
                continue
            v = values[rdef.id]
            rtype = rdef.type
            if rdef.multiple:
                resources.append(codecs.MultiResource(rdef.id, rtype, v))
            else:
                resources.append(codecs.Resource(rdef.id, rtype, v))
        return codecs.ObjectInstance(iid, tuple(resources))

    async def read_encoded(self, path: tuple[int, ...], fmt: int) -> bytes:
        return codecs.encode(await self.node(path), path, fmt)

    async def discover(self, path: tuple[int, ...]) -> str:
        p = self._provider(path[0])
        iids = await self._call(p.instances)
        if len(path) > 1 and path[1] not in iids:
            raise Lwm2mError("4.04", f"no instance {codecs.format_path(path[:2])}")
        links: list[tuple[str, dict]] = []
        attrs = self.tree.attributes
        if len(path) == 1:
            links.append((f"/{path[0]}", dict(attrs.get(path[:1], {}))))
        for iid in iids if len(path) == 1 else [path[1]]:
            if len(path) <= 2:
                links.append((f"/{path[0]}/{iid}", dict(attrs.get((path[0], iid), {}))))
            for rdef in p.definition.resources:
                if len(path) == 3 and rdef.id != path[2]:
                    continue
                links.append((f"/{path[0]}/{iid}/{rdef.id}", dict(attrs.get((path[0], iid, rdef.id), {}))))
        if len(path) == 3 and len(links) == 0:
            raise Lwm2mError("4.04", f"no resource {codecs.format_path(path)}")
        return codecs.link_format(links)

    async def write(self, path: tuple[int, ...], payload: bytes, fmt: int | None, *, replace: bool) -> None:
        if len(path) < 2 or len(path) > 3:
            raise Lwm2mError("4.05", "write targets an object instance or a resource")
        p = self._provider(path[0])
        if path[1] not in await self._call(p.instances):
            raise Lwm2mError("4.04", f"no instance {codecs.format_path(path[:2])}")
        node = codecs.decode(payload, path, fmt if fmt is not None else codecs.TEXT, schema)
        writes: list[tuple[int, Any]] = []
        if isinstance(node, codecs.ObjectInstance):
            for r in node.resources:
                writes.append((r.id, r.value if isinstance(r, codecs.Resource) else r.instances))
        elif isinstance(node, codecs.Resource):
            writes.append((node.id, node.value))
        else:
            raise Lwm2mError("4.05", "multiple-instance writes are not supported")
        for rid, _ in writes:
            rdef = p.definition.resource(rid)
            if not rdef.operations.writable:
                raise Lwm2mError("4.05", f"{codecs.format_path((*path[:2], rid))} is not writable")
        for rid, value in writes:
            await self._call(p.write, path[1], rid, value)
        await self.tree.refresh()

    async def execute(self, path: tuple[int, ...], args: bytes) -> None:
        p = self._provider(path[0])
        try:
            rdef = p.definition.resource(path[2])
        except KeyError:
            raise Lwm2mError("4.04", f"no resource {codecs.format_path(path)}") from None
        if rdef.operations is not Operations.E or rdef.type is not ResourceType.NONE:
            raise Lwm2mError("4.05", f"{codecs.format_path(path)} is not executable")
        if path[1] not in await self._call(p.instances):
            raise Lwm2mError("4.04", f"no instance {codecs.format_path(path[:2])}")
        await self._call(p.execute, path[1], path[2], args, self.actor)
        self.changed()

    async def create(self, oid: int, payload: bytes, fmt: int | None) -> int:
        p = self._provider(oid)
        node = codecs.decode(payload, (oid,), fmt if fmt is not None else codecs.TLV, schema)
        if isinstance(node, codecs.Object):
            if len(node.instances) != 1:
                raise Lwm2mError("4.00", "create exactly one instance")
            node = node.instances[0]
        if not isinstance(node, codecs.ObjectInstance):
            raise Lwm2mError("4.00", "create needs an object instance")
        values = {r.id: r.value for r in node.resources if isinstance(r, codecs.Resource)}
        iid = await self._call(p.create, values, self.actor)
        self.changed()
        return iid

    async def delete(self, path: tuple[int, ...]) -> None:
        p = self._provider(path[0])
        if path[1] not in await self._call(p.instances):
            raise Lwm2mError("4.04", f"no instance {codecs.format_path(path)}")
        await self._call(p.delete, path[1], self.actor)
        self.changed()
