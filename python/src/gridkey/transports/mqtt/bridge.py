"""MQTT bridges: gateway events into the durable outbox, and the outbox out to each broker.

Per bridge, two threads: the *intake* takes gateway events (the hub's live ones, and on start the
ones the store holds after the bridge's cursor, so an event committed just before a crash is not
lost) and accepts their messages into the outbox together with the new cursor; the *publisher*
(publisher.py) drains the outbox. The gateway never waits for a broker: an outage only grows the
outbox, within its bounds.

Consumes gateway events and nothing else (DESIGN §2: a transport maps its protocol onto the
gateway service, never the other way round, and imports no other transport).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ...gateway import Gateway, GatewayEvent
from .config import BridgeConfig
from .messages import ReadingValues, Shaper
from .outbox import DEAD_LETTERED, DROPPED_FULL, ENQUEUED, PUBLISHED, REJECTED_FULL, Outbox
from .publisher import Publisher

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
REPLAY_SLACK = 256  # as the hub's replica poller: ids that may still commit below the newest seen
INTAKE_BATCH = 200  # gateway events accepted into the outbox in one transaction
QUEUE_SIZE = 50_000


class Bridge:
    def __init__(
        self,
        cfg: BridgeConfig,
        gateway: Gateway,
        outbox: Outbox,
        *,
        reading_values: ReadingValues | None = None,
        latency: Histogram | None = None,
    ) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.outbox = outbox
        self.profile = cfg.make_profile()
        self.shaper = Shaper(cfg, self.profile, gateway.trust.coordinator.gateway_id, reading_values)
        observe = latency.labels(cfg.name).observe if latency is not None else None
        self.publisher = Publisher(cfg, self.profile, outbox, on_latency=observe)
        self._events: queue.Queue[GatewayEvent | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._overflow = threading.Event()
        self._stop = threading.Event()
        self._unsubscribe = None
        self._intake = threading.Thread(target=self._run_intake, name=f"gridkey-bridge-in-{cfg.name}", daemon=True)
        self.slack = REPLAY_SLACK if gateway.store.is_postgres else 0  # SQLite commits ids in order

    def start(self) -> None:
        # subscribe before reading the store, so nothing committed in between is missed
        self._unsubscribe = self.gateway.hub.subscribe(self._on_event)
        self._intake.start()
        self.publisher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)
        self._intake.join(10)
        self.publisher.stop()

    def _on_event(self, ev: GatewayEvent) -> None:
        """Hub subscriber (runs on the publishing thread): hand over, never block the gateway."""
        if not self.shaper.wanted(ev):
            return
        try:
            self._events.put_nowait(ev)
        except queue.Full:  # the intake fell behind: it re-reads the store from its cursor
            self._overflow.set()

    # --- intake ---------------------------------------------------------------------------------

    def _run_intake(self) -> None:
        try:
            cursor = self.outbox.cursor(self.cfg.name)
            if cursor is None:  # a new bridge forwards from now on, not the store's history
                cursor = self.gateway.latest_event_id()
                self.outbox.accept(self.cfg.name, [], cursor, self.cfg.outbox)
            # On PostgreSQL, ids commit out of order across replicas: re-read a little before the
            # cursor (a message sent already goes again, under its id; one still queued does not).
            covered = self._replay(max(0, cursor - self.slack))
            while not self._stop.is_set():
                if self._overflow.is_set():
                    self._overflow.clear()
                    self._drain_queue()
                    covered = self._replay(max(0, (self.outbox.cursor(self.cfg.name) or 0) - self.slack))
                    continue
                try:
                    ev = self._events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if ev is None:
                    break
                batch = [ev]
                while len(batch) < INTAKE_BATCH:
                    try:
                        nxt = self._events.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._stop.set()
                        break
                    batch.append(nxt)
                # live events come in publication order, which need not be id order: take each
                # one the hub hands over (it hands each over once), except what the replay took
                self._accept(sorted((e for e in batch if e.id > covered), key=lambda e: e.id))
        except Exception:
            log.exception("bridge %s: intake stopped", self.cfg.name)

    def _drain_queue(self) -> None:
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return

    def _replay(self, after: int) -> int:
        """Accept what the store holds after event ``after``; returns the last id it covered."""
        while not self._stop.is_set():
            page = self.gateway.events_since(after, limit=REPLAY_PAGE)
            if not page:
                break
            self._accept([e for e in page if self.shaper.wanted(e)], page[-1].id)
            after = page[-1].id
            if len(page) < REPLAY_PAGE:
                break
        return after

    def _accept(self, events: list[GatewayEvent], cursor: int | None = None) -> None:
        cursor = max([e.id for e in events] + ([cursor] if cursor is not None else []), default=None)
        if cursor is None:
            return
        messages = [m for ev in events for m in self.shaper.messages(ev)]
        stats = self.outbox.accept(self.cfg.name, messages, cursor, self.cfg.outbox)
        if stats[REJECTED_FULL] or stats[DROPPED_FULL]:
            log.warning(
                "bridge %s: outbox full (%s): %d rejected, %d oldest dropped",
                self.cfg.name,
                self.cfg.outbox.full,
                stats[REJECTED_FULL],
                stats[DROPPED_FULL],
            )
        if messages:
            self.publisher.wake.set()

    # --- what it says about itself --------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        st = self.publisher.status
        depth, size = self.outbox.depth(self.cfg.name)
        counters = self.outbox.counters(self.cfg.name)
        return {
            "name": self.cfg.name,
            "profile": self.cfg.profile,
            "broker": st.broker,
            "client_id": self.cfg.client_id,
            "mqtt": self.cfg.mqtt,
            "telemetry": self.cfg.telemetry,
            "connected": st.connected,
            "connected_since": st.connected_since,
            "reconnects": st.reconnects,
            "last_error": st.last_error,
            "outbox": {
                "messages": depth,
                "bytes": size,
                "max_messages": self.cfg.outbox.max_messages,
                "max_bytes": self.cfg.outbox.max_bytes,
                "full": self.cfg.outbox.full,
            },
            "counters": {**counters, "publish_failures": st.publish_failures},
            "cloud": {"accepted": st.cloud_accepted, "rejected": st.cloud_rejected, "last": st.last_cloud_answer},
            "token_expires_at": st.token_expires_at,
            "dead_letters": self.outbox.dead_letters(self.cfg.name, limit=5),
        }


class Bridges:
    """Every configured bridge of one sidecar, their outbox, and their metrics."""

    def __init__(
        self,
        configs: list[BridgeConfig],
        gateway: Gateway,
        outbox_path: Path,
        *,
        reading_values: ReadingValues | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.outbox = Outbox(outbox_path)
        self.latency = Histogram(
            "gridkey_bridge_publish_latency_seconds",
            "Time from publishing a QoS 1 message to its PUBACK",
            ["bridge"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
        )
        self.bridges = [
            Bridge(c, gateway, self.outbox, reading_values=reading_values, latency=self.latency) for c in configs
        ]
        if registry is not None:
            registry.register(BridgeCollector(self))

    def start(self) -> None:
        for b in self.bridges:
            b.start()

    def stop(self) -> None:
        for b in self.bridges:
            b.stop()
        self.outbox.close()

    def describe(self) -> list[dict[str, Any]]:
        return [b.describe() for b in self.bridges]


class BridgeCollector(Collector):
    """Per-bridge gauges and counters, read at scrape time from the outbox and the publishers."""

    def __init__(self, bridges: Bridges) -> None:
        self.bridges = bridges

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily("gridkey_bridge_connected", "1 while connected to its broker", labels=["bridge"])
        depth = GaugeMetricFamily("gridkey_bridge_outbox_messages", "Messages waiting in the outbox", labels=["bridge"])
        size = GaugeMetricFamily("gridkey_bridge_outbox_bytes", "Bytes waiting in the outbox", labels=["bridge"])
        fams = {
            name: CounterMetricFamily(f"gridkey_bridge_{name}", text, labels=["bridge"])
            for name, text in (
                (ENQUEUED, "Messages accepted into the outbox"),
                (PUBLISHED, "Messages the broker acknowledged"),
                (DEAD_LETTERED, "Messages refused (by the broker or the profile), kept as dead letters"),
                (REJECTED_FULL, "Messages refused because the outbox was full (reject-new)"),
                (DROPPED_FULL, "Oldest messages dropped because the outbox was full (drop-oldest)"),
                ("publish_failures", "Publishes that failed (reason code or refused before sending)"),
                ("reconnects", "Connections made to the broker"),
            )
        }
        for b in self.bridges.bridges:
            name = b.cfg.name
            st = b.publisher.status
            n, nbytes = b.outbox.depth(name)
            connected.add_metric([name], 1 if st.connected else 0)
            depth.add_metric([name], n)
            size.add_metric([name], nbytes)
            counters = b.outbox.counters(name)
            for key in (ENQUEUED, PUBLISHED, DEAD_LETTERED, REJECTED_FULL, DROPPED_FULL):
                fams[key].add_metric([name], counters[key])
            fams["publish_failures"].add_metric([name], st.publish_failures)
            fams["reconnects"].add_metric([name], st.reconnects)
        yield connected
        yield depth
        yield size
        yield from fams.values()
