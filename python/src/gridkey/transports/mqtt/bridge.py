"""MQTT bridges: gateway events into the durable outbox, and the outbox out to each broker.

Per bridge, two threads: the *intake* reads the gateway's events from the store after the bridge's
cursor (the hub only wakes it up) and accepts their messages into the outbox together with the new
cursor, so an event committed just before a crash is taken after it; the *publisher*
(publisher.py) drains the outbox. The gateway never waits for a broker: an outage only grows the
outbox, within its bounds.

Consumes gateway events and nothing else (DESIGN §2: a transport maps its protocol onto the
gateway service, never the other way round, and imports no other transport).
"""

from __future__ import annotations

import logging
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

REPLAY_PAGE = 500  # gateway events accepted into the outbox in one transaction, at most
REPLAY_SLACK = 256  # as the hub's replica poller: ids that may still commit below the newest seen
POLL_S = 1.0  # the store is read at least this often, even without a wake-up (other replicas)


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
        self.id_prefix = f"{gateway.trust.coordinator.gateway_id}-{outbox.instance_id}"
        self.shaper = Shaper(cfg, self.profile, gateway.trust.coordinator.gateway_id, reading_values, self.id_prefix)
        observe = latency.labels(cfg.name).observe if latency is not None else None
        self.publisher = Publisher(cfg, self.profile, outbox, on_latency=observe)
        self.slack = REPLAY_SLACK if gateway.store.is_postgres else 0  # SQLite makes ids visible in order
        self.intake_error: str | None = None
        self.lost_to_retention = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._recent: dict[int, None] = {}  # event ids taken within the slack (PostgreSQL only)
        self._unsubscribe = None
        self._intake = threading.Thread(target=self._run_intake, name=f"gridkey-bridge-in-{cfg.name}", daemon=True)

    def start(self) -> None:
        self._unsubscribe = self.gateway.hub.subscribe(self._on_event)
        self._intake.start()
        self.publisher.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._intake.join(10)
        self.publisher.stop()

    def _on_event(self, ev: GatewayEvent) -> None:
        """Hub subscriber (on the publishing thread): only a wake-up; the store is the source."""
        if self.shaper.wanted(ev):
            self._wake.set()

    # --- intake ---------------------------------------------------------------------------------

    def _run_intake(self) -> None:
        """Take events from the store after the cursor, forever; a failure is retried, and shown.

        The store, not the hub, is read: the hub announces events after their transactions end, so
        two concurrent requests can announce id 12 before id 11, while the store shows rows in id
        order (SQLite has one writer at a time). On PostgreSQL, ids commit out of order across
        replicas, so the last ``REPLAY_SLACK`` ids are read again and the ones taken are skipped.
        """
        failures = 0
        while not self._stop.is_set():
            try:
                cursor = self._start_cursor()
                while not self._stop.is_set():
                    cursor = self._take(cursor)
                    failures = 0
                    self.intake_error = None
                    self._wake.wait(POLL_S)
                    self._wake.clear()
            except Exception as exc:  # the store may be busy or away: keep trying, say so
                failures += 1
                self.intake_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("bridge %s: intake failed (%s); retrying", self.cfg.name, self.intake_error)
                self._stop.wait(min(30.0, 0.5 * 2**failures))

    def _start_cursor(self) -> int:
        latest = self.gateway.latest_event_id()
        cursor = self.outbox.cursor(self.cfg.name)
        if cursor is None:  # a new bridge forwards from now on, not the store's history
            self.outbox.accept(self.cfg.name, [], latest, self.cfg.outbox)
            return latest
        if cursor > latest:
            # the store was restored or replaced: its ids start again below the cursor. New ids
            # under a new id namespace, so no message id is ever reused for other content.
            log.warning(
                "bridge %s: the store's newest event (%d) is older than the bridge's cursor (%d): "
                "forwarding from there under a new message id prefix",
                self.cfg.name,
                latest,
                cursor,
            )
            self.outbox.renew_instance_id()
            self.id_prefix = f"{self.gateway.trust.coordinator.gateway_id}-{self.outbox.instance_id}"
            self.shaper.id_prefix = self.id_prefix
            self.outbox.reset_cursor(self.cfg.name, latest)
            return latest
        return max(0, cursor - self.slack)

    def _take(self, after: int) -> int:
        """Accept the store's events after ``after`` in pages; returns the new cursor."""
        while not self._stop.is_set():
            page = self.gateway.events_since(after, limit=REPLAY_PAGE)
            if not page:
                return after
            if page[0].id > after + 1 and self.slack == 0 and after > 0:
                lost = page[0].id - after - 1  # pruned before the bridge took them (event_retention)
                self.lost_to_retention += lost
                log.error("bridge %s: %d events were pruned before it took them", self.cfg.name, lost)
            events = [e for e in page if e.id not in self._recent and self.shaper.wanted(e)]
            messages = [m for ev in events for m in self.shaper.messages(ev)]
            stats = self.outbox.accept(self.cfg.name, messages, page[-1].id, self.cfg.outbox)
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
            if self.slack:
                for e in page:
                    self._recent[e.id] = None
                floor = page[-1].id - self.slack
                for eid in [i for i in self._recent if i <= floor]:
                    del self._recent[eid]
                after = max(after, floor)  # re-read the slack next time, skipping what was taken
                if len(page) < REPLAY_PAGE:
                    return after
                continue
            after = page[-1].id
            if len(page) < REPLAY_PAGE:
                return after
        return after

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
            "intake_error": self.intake_error,
            "lost_to_retention": self.lost_to_retention,
            "id_prefix": self.id_prefix,
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
