"""The sidecar process: store + gateway service + CoAP + REST (+ an optional controller), wired.

This is the composition root: the one place that knows every transport. It runs an asyncio loop
for CoAP, the controller and the periodic work (deadlines, batched joins, periodic rekeys, the
event poller that lets replicas see each other's events), and the REST API on waitress threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from .datadir import DataDir
from .gateway import Conflict, Gateway, GatewayConfig
from .gateway.batcher import Batcher
from .meter.agent import MeterAgent
from .meter.delivered import DeliveredReadings
from .meter.links import CoapLink, LinkError
from .protocol.messages import Mode
from .protocol.policy import MemberPolicy
from .store import Store
from .transports.coap import CoapServer

log = logging.getLogger("gridkey.sidecar")


@dataclass
class SidecarOptions:
    data_dir: Path
    db_url: str | None = None
    coap: tuple[str, int] | None = ("127.0.0.1", 5683)
    http: tuple[str, int] | None = ("127.0.0.1", 8080)
    controller: bool = False
    suite: str = "GK1"
    config: GatewayConfig = field(default_factory=GatewayConfig)
    jwks_url: str | None = None
    token_issuer: str = "gridkey"  # noqa: S105 - an issuer name, not a secret
    http_threads: int = 32
    lwm2m_server: str | None = None  # coap://host:port of an LwM2M server (e.g. Leshan)
    lwm2m_lifetime: int = 60
    bridges: list = field(default_factory=list)  # BridgeConfig values (transports.mqtt.config)
    ca_cert_file: Path | None = None  # an external CA (production layout): no CA key on this host
    crl_file: Path | None = None  # the CRL that CA publishes; served to meters, re-read when it changes


class Sidecar:
    def __init__(self, opts: SidecarOptions) -> None:
        self.opts = opts
        self.data = DataDir(opts.data_dir)
        self.store: Store | None = None
        self.gateway: Gateway | None = None
        self.coap: CoapServer | None = None
        self.http = None
        self.controller: MeterAgent | None = None
        self.delivered: DeliveredReadings | None = None  # what the controller decrypted (REST readings)
        self.lwm2m = None
        self.bridges = None
        self.registry = None  # Prometheus registry shared by REST and the bridges
        self._tasks: list[asyncio.Task] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def coap_url(self) -> str | None:
        return f"coap://{self.opts.coap[0]}:{self.opts.coap[1]}" if self.opts.coap else None

    @property
    def http_url(self) -> str | None:
        return f"http://{self.opts.http[0]}:{self.http.port}" if self.http is not None and self.opts.http else None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        external = self.opts.ca_cert_file is not None
        self.data.init(suite=self.opts.suite, external_ca=external)
        trust = self.data.trust(ca_cert_file=self.opts.ca_cert_file, crl_file=self.opts.crl_file)
        if trust.holds_ca_key:
            log.warning(
                "lab layout: the CA private key is in %s on this gateway host, so whoever holds this host can "
                "mint member identities; in production run the CA elsewhere (gridkey serve --ca-cert --crl)",
                self.data.ca_dir,
            )
        self.store = Store(self.opts.db_url or self.data.db_url)
        await asyncio.to_thread(self.store.migrate)
        self.gateway = Gateway(self.store, trust, self.opts.config)
        await asyncio.to_thread(self.gateway.reconcile)
        self.gateway.hub.last_id = await asyncio.to_thread(self.gateway.latest_event_id)
        batcher = Batcher(self.gateway)
        self._batcher = batcher
        if self.opts.coap:
            self.coap = CoapServer(self.gateway, batcher=batcher, bind=self.opts.coap)
            await self.coap.start()
        if self.opts.controller:
            await self._start_controller()
        if self.opts.bridges:
            self._start_bridges()
        if self.opts.http:
            self._start_http(batcher)
        if self.opts.lwm2m_server:
            from .transports.lwm2m.bridge import Lwm2mBridge

            controller = self.controller
            self.lwm2m = Lwm2mBridge(
                self.gateway,
                self.opts.lwm2m_server,
                lifetime=self.opts.lwm2m_lifetime,
                readings=(lambda mid: controller.latest_readings.get(mid)) if controller else None,
            )
            await self.lwm2m.start()
        self._tasks.append(asyncio.create_task(self._periodic(), name="gridkey-periodic"))

    def _start_bridges(self) -> None:
        from prometheus_client import CollectorRegistry

        from .transports.mqtt.bridge import Bridges

        self.registry = self.registry or CollectorRegistry()
        self.bridges = Bridges(
            list(self.opts.bridges),
            self.gateway,
            self.data.path / "bridges.db",
            reading_values=self._reading_values(),
            registry=self.registry,
        )
        self.bridges.start()

    def _start_http(self, batcher: Batcher) -> None:
        from .transports.rest.app import create_app
        from .transports.rest.auth import TokenVerifier
        from .transports.rest.server import run_in_thread

        if self.opts.jwks_url:
            verifier = TokenVerifier(jwks_url=self.opts.jwks_url, issuer=self.opts.token_issuer)
        else:
            pub = self.data.token_key().public_key.to_cryptography()
            verifier = TokenVerifier(public_key=pub, issuer=self.opts.token_issuer)
        app = create_app(
            self.gateway,
            verifier=verifier,
            batcher=batcher,
            command_sender=self._command_sender(),
            reading_values=self._reading_values(),
            bridges_status=self.bridges.describe if self.bridges is not None else None,
            metrics_registry=self.registry,
        )
        host, port = self.opts.http
        self.http = run_in_thread(app, host, port, threads=self.opts.http_threads)

    async def _start_controller(self) -> None:
        assert self.coap_url, "the in-sidecar controller talks CoAP to this sidecar"
        key, cert = self.data.controller(self.opts.suite)
        from cryptography import x509

        member_id = str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        self.delivered = DeliveredReadings()
        self.controller = MeterAgent(
            meter_id=member_id,
            signing_key=key,
            cert_der=cert.public_bytes(Encoding.DER),
            ca_cert=self.gateway.trust.ca_cert,
            link=CoapLink(self.coap_url),
            resync_s=5.0,
            on_event=self.delivered.on_agent_event,
            # It runs inside the gateway process, so it cannot defend against the gateway anyway:
            # it takes part in whatever mode the operator chose for a group.
            policy=MemberPolicy(modes=frozenset(Mode)),
        )
        await self.controller.start()

    def _reading_values(self):
        """What the controller decrypted, for the REST readings endpoints (None without a controller)."""
        if self.controller is None or self.delivered is None:
            return None
        controller, delivered = self.controller, self.delivered

        def lookup(group_id: str, digest: str, wait_s: float) -> dict | None:
            # Not a member of the group at all: it never will decrypt this, so do not make the
            # caller wait. (A membership test on the agent's dict from this thread: a snapshot is
            # enough, a group the controller joins a moment later just gets the wait.)
            if group_id not in controller.groups:
                return None
            return delivered.get(digest, wait_s)

        return lookup

    def _command_sender(self):
        if self.controller is None:
            return None
        loop = self.loop
        controller = self.controller

        def send(group_id: str, payload: bytes) -> dict:
            fut = asyncio.run_coroutine_threadsafe(controller.send_command(group_id, payload), loop)
            try:
                return fut.result(timeout=30)
            except LinkError as exc:
                raise Conflict(f"controller could not send: {exc.detail}") from None

        return send

    async def _periodic(self) -> None:
        assert self.gateway is not None
        interval = self.opts.config.tick_interval_ms / 1000
        n = 0
        while True:
            await asyncio.sleep(interval)
            n += 1
            try:
                await asyncio.to_thread(self.gateway.tick)
                await asyncio.to_thread(self.gateway.hub.poll, self.store)
                if n % 300 == 0:
                    await asyncio.to_thread(self.gateway.prune)
            except Exception:  # the database may be briefly unavailable; keep going
                log.exception("periodic work failed")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.lwm2m is not None:
            await self.lwm2m.stop()
        if self.controller is not None:
            await self.controller.stop()
        if self.delivered is not None:
            self.delivered.close()
        if self.http is not None:
            self.http.close()
        if self.bridges is not None:
            self.bridges.stop()
        if self.coap is not None:
            await self.coap.stop()
        if getattr(self, "_batcher", None):
            self._batcher.close()
        if self.store is not None:
            self.store.dispose()

    def describe(self) -> dict:
        return {
            "coap": self.coap_url,
            "http": self.http_url,
            "openapi": f"{self.http_url}/openapi.json" if self.http_url else None,
            "events": f"{self.http_url}/v1/events" if self.http_url else None,
            "data_dir": str(self.data.path),
            "db": (self.opts.db_url or self.data.db_url).split("@")[-1],
            "controller": self.controller.meter_id if self.controller else None,
            "lwm2m": self.opts.lwm2m_server,
            "bridges": ", ".join(f"{b.name} ({b.profile} {b.host}:{b.port})" for b in self.opts.bridges) or None,
            "ca_cert": str(self.opts.ca_cert_file or self.data.ca_dir / "ca-cert.pem"),
        }

    def describe_json(self) -> str:
        return json.dumps(self.describe())
