"""The LwM2M transport: one endpoint per enrolled meter plus one for the gateway, kept in step
with the gateway service.

Gateway events drive it: an enrolled meter gets an endpoint; membership changes make the affected
endpoints send a registration Update (their 33001 instances changed); every negotiation step and
committed epoch re-reads the observed resources of the endpoints involved, so an observing LwM2M
server (e.g. Leshan's web UI) sees key versions change as they happen.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ...gateway import Gateway, GatewayEvent
from .client import Endpoint
from .model import (
    DeviceProvider,
    GroupMembershipProvider,
    MeterCredentialProvider,
    PowerMeasurementProvider,
    ReadingsSource,
)
from .objects import DEVICE_ID, GROUP_MEMBERSHIP_ID, METER_CREDENTIAL_ID, POWER_MEASUREMENT_ID

log = logging.getLogger(__name__)

_MEMBERSHIP_EVENTS = ("group.created", "member.added", "member.removed", "meter.revoked")


class Lwm2mBridge:
    def __init__(
        self,
        gateway: Gateway,
        server: str,
        *,
        lifetime: int = 60,
        readings: ReadingsSource | None = None,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.gateway = gateway
        self.server = server
        self.lifetime = lifetime
        self.readings = readings
        self.bind_host = bind_host
        self.endpoints: dict[str, Endpoint] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gridkey-lwm2m")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe = None
        self._tick: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    @property
    def gateway_endpoint(self) -> str:
        return self.gateway.trust.coordinator.gateway_id

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        gw_name = self.gateway_endpoint
        await self._add(
            gw_name,
            {
                DEVICE_ID: DeviceProvider(gw_name, "GridKey sidecar", "gateway"),
                GROUP_MEMBERSHIP_ID: GroupMembershipProvider(self.gateway, None),
            },
        )
        meters = await self._loop.run_in_executor(self._executor, self.gateway.list_meters)
        for m in meters:
            if m["role"] == "meter":
                await self._add_meter(m["meter_id"])
        loop = self._loop
        self._unsubscribe = self.gateway.hub.subscribe(lambda ev: loop.call_soon_threadsafe(self._on_event, ev))
        self._tick = asyncio.create_task(self._periodic())

    async def _add_meter(self, meter_id: str) -> None:
        providers = {
            DEVICE_ID: DeviceProvider(meter_id, "GridKey meter", "smart meter"),
            GROUP_MEMBERSHIP_ID: GroupMembershipProvider(self.gateway, meter_id),
            METER_CREDENTIAL_ID: MeterCredentialProvider(self.gateway, meter_id),
        }
        if self.readings is not None:
            providers[POWER_MEASUREMENT_ID] = PowerMeasurementProvider(meter_id, self.readings)
        await self._add(meter_id, providers)

    async def _add(self, name: str, providers) -> None:
        if name in self.endpoints:
            return
        ep = Endpoint(
            name,
            providers,
            self.server,
            lifetime=self.lifetime,
            executor=self._executor,
            bind_host=self.bind_host,
            actor=f"lwm2m:{name}",
        )
        self.endpoints[name] = ep
        await ep.start()

    def _on_event(self, ev: GatewayEvent) -> None:
        """On the event loop: map a gateway event onto endpoints."""
        if ev.kind == "meter.enrolled" and ev.meter_id and ev.body.get("role") == "meter":
            self._spawn(self._add_meter(ev.meter_id))
            return
        touched: set[str] = set()
        if ev.meter_id:
            touched.add(ev.meter_id)
        touched.update(ev.body.get("members", []) or [])
        if ev.kind in _MEMBERSHIP_EVENTS:
            for name in touched | {self.gateway_endpoint}:
                ep = self.endpoints.get(name)
                if ep is not None:
                    ep.changed()
        if ev.group_id and (ev.kind.startswith(("session.", "epoch.", "member.", "group.")) or touched):
            if not touched:  # session.* events carry no member list: refresh everyone in the group
                touched = set(self.endpoints)
            for name in touched | {self.gateway_endpoint}:
                ep = self.endpoints.get(name)
                if ep is not None and ep.tree.observations:
                    self._spawn(ep.tree.refresh())

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _periodic(self) -> None:
        """pmax notifications, and data that changes without an event (readings, current time)."""
        while True:
            await asyncio.sleep(1.0)
            for ep in list(self.endpoints.values()):
                if ep.tree.observations:
                    try:
                        await ep.tree.refresh(periodic=True)
                    except Exception:
                        log.exception("lwm2m refresh failed for %s", ep.name)

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._tick:
            self._tick.cancel()
        await asyncio.gather(*(ep.stop() for ep in self.endpoints.values()), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict:
        return {
            name: {"registered": ep.location is not None, "registrations": ep.registrations, "updates": ep.updates}
            for name, ep in self.endpoints.items()
        }
