"""A fleet simulator: N meter agents in one process, each with its own identity and UDP socket.

Identities come from a provisioning source: the sidecar's local CA (``DataDir``), which stands in
for factory provisioning in demos and tests. Every meter sends synthetic energy readings (a daily
load curve with noise) at a configurable interval once it holds a group key.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..crypto.signatures import SigningKey
from ..protocol.policy import MemberPolicy
from .agent import ENROL_BACKOFF_S, MeterAgent, cancel_all
from .links import CoapLink, HttpLink, Link


@dataclass(frozen=True)
class Provisioned:
    meter_id: str
    key: SigningKey
    cert: x509.Certificate


def make_link(server: str) -> Link:
    if server.startswith("coap://"):
        return CoapLink(server)
    if server.startswith(("http://", "https://")):
        return HttpLink(server)
    raise ValueError(f"server must be a coap:// or http(s):// URL, got {server!r}")


def synthetic_reading(meter_id: str, t: float, rng: random.Random) -> dict:
    """A plausible household reading: a morning and an evening peak, plus noise (kWh per interval)."""
    hour = (t / 3600) % 24
    base = 0.25 + 0.35 * math.exp(-((hour - 8) ** 2) / 4) + 0.6 * math.exp(-((hour - 19) ** 2) / 6)
    return {"meter": meter_id, "ts": int(t * 1000), "kWh": round(base * (0.8 + 0.4 * rng.random()), 4)}


class Fleet:
    def __init__(
        self,
        identities: list[Provisioned],
        *,
        ca_cert: x509.Certificate,
        server: str,
        reading_interval_s: float = 0.0,
        resync_s: float = 10.0,
        status_file: Path | None = None,
        on_event: Callable[[str, str, dict], None] | None = None,
        concurrency: int = 64,
        policy: MemberPolicy | None = None,
        crl_refresh_s: float = 300.0,
        enrol_backoff_s: tuple[float, float] = ENROL_BACKOFF_S,
    ) -> None:
        self.enrol_backoff_s = enrol_backoff_s
        self.policy = policy or MemberPolicy()
        self.crl_refresh_s = crl_refresh_s
        self.identities = identities
        self.ca_cert = ca_cert
        self.server = server
        self.reading_interval_s = reading_interval_s
        self.resync_s = resync_s
        self.status_file = status_file
        self.on_event = on_event or (lambda meter, kind, info: None)
        self.concurrency = concurrency
        self.agents: list[MeterAgent] = []
        self._tasks: list[asyncio.Task] = []

    async def start(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Start every meter; each enrols on its own, retrying until it works, so one meter's
        failure never holds up or stops another. ``wait``: return once all have enrolled (tests,
        benchmarks), and with ``timeout`` raise ``TimeoutError`` naming who is still trying and
        why; otherwise return at once, with the stragglers still trying (see :meth:`enrolling`)."""
        sem = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(agent: MeterAgent) -> None:
            nonlocal done
            await agent.start_retrying(self.enrol_backoff_s, gate=sem)
            done += 1
            if progress:
                progress(done, len(self.identities))

        self.agents = [
            MeterAgent(
                meter_id=p.meter_id,
                signing_key=p.key,
                cert_der=p.cert.public_bytes(Encoding.DER),
                ca_cert=self.ca_cert,
                link=make_link(self.server),
                resync_s=self.resync_s,
                on_event=lambda kind, info, m=p.meter_id: self.on_event(m, kind, info),
                policy=self.policy,
                crl_refresh_s=self.crl_refresh_s,
            )
            for p in self.identities
        ]
        enrolments = [asyncio.create_task(one(a), name=f"{a.meter_id}-enrol") for a in self.agents]
        self._tasks += enrolments
        if self.reading_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._readings()))
        if self.status_file is not None:
            self._tasks.append(asyncio.create_task(self._write_status()))
        if wait:
            try:
                await asyncio.wait_for(asyncio.gather(*enrolments), timeout)
            except TimeoutError:
                late = {a.meter_id: a.enrol_error for a in self.enrolling()}
                raise TimeoutError(f"{len(late)} meter(s) not enrolled after {timeout} s: {late}") from None

    def enrolling(self) -> list[MeterAgent]:
        """The meters still trying to enrol (their status says why the last attempt failed)."""
        return [a for a in self.agents if not a.enrolled]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.status_file is not None:
            self.write_status()
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)

    async def _readings(self) -> None:
        rng = random.Random(42)
        while True:
            await asyncio.sleep(self.reading_interval_s)
            sends = []
            for agent in self.agents:
                for gid in agent.groups:
                    if agent.current_channel(gid) is not None:
                        sends.append(agent.send_reading(gid, synthetic_reading(agent.meter_id, time.time(), rng)))
            results = await asyncio.gather(*sends, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception):
                    self.on_event("fleet", "error", {"detail": str(r)})

    def status(self) -> dict:
        return {"updated_at": int(time.time() * 1000), "meters": [a.status() for a in self.agents]}

    def write_status(self) -> None:
        assert self.status_file is not None
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, self.status_file)

    async def _write_status(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(0.3)
