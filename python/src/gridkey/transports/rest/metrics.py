"""Prometheus metrics for ``/metrics``.

Fleet gauges come from :meth:`Gateway.stats` at scrape time (so every replica reports the shared
store's view), counters from the gateway's in-process ``counters`` (per replica, reset on
restart, which Prometheus' ``rate()`` handles). Each app gets its own registry unless one is
passed in, so several apps in one process (tests, multi-tenant) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...gateway import Gateway

log = logging.getLogger(__name__)


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self.gateway.stats()
        except Exception as exc:  # the store is down: report that, keep serving the other metrics
            log.warning("metrics: gateway stats unavailable (%s)", type(exc).__name__)
            yield GaugeMetricFamily("gridkey_store_up", "1 if the store answered the last scrape", value=0)
            return
        yield GaugeMetricFamily("gridkey_store_up", "1 if the store answered the last scrape", value=1)
        yield GaugeMetricFamily("gridkey_meters", "Enrolled meters (any status)", value=stats["meters"])
        yield GaugeMetricFamily("gridkey_groups", "Groups", value=stats["groups"])
        yield GaugeMetricFamily("gridkey_live_sessions", "Key negotiations in progress", value=stats["live_sessions"])
        yield GaugeMetricFamily("gridkey_epochs", "Committed epochs in the store", value=stats["epochs"])
        counters: dict[str, int] = stats.get("counters", {})
        yield CounterMetricFamily(
            "gridkey_epochs_committed",
            "Epochs this replica committed",
            value=counters.get("epochs_committed", 0),
        )
        drops = CounterMetricFamily("gridkey_dropped_messages", "Member messages dropped, by reason", labels=["reason"])
        aborts = CounterMetricFamily("gridkey_session_aborts", "Sessions aborted, by reason", labels=["reason"])
        refusals = CounterMetricFamily(
            "gridkey_member_refusals", "Starts members reported (signed) refusing, by reason", labels=["reason"]
        )
        for name, value in sorted(counters.items()):
            kind, _, reason = name.partition(":")
            if kind == "drop" and reason:
                drops.add_metric([reason], value)
            elif kind == "abort" and reason:
                aborts.add_metric([reason], value)
            elif kind == "refusal" and reason:
                refusals.add_metric([reason], value)
        yield drops
        yield aborts
        yield refusals


class RestMetrics:
    """The HTTP-side metrics plus the gateway collector, in one registry."""

    def __init__(self, gateway: Gateway, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(GatewayCollector(gateway))
        self.requests = Counter(
            "gridkey_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gridkey_http_request_duration_seconds",
            "Time to produce the response (streams: until headers)",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.sse_streams = Gauge("gridkey_sse_streams", "Open event streams", registry=self.registry)
