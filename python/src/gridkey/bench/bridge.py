"""``gridkey bench bridge``: messages through the durable outbox to a local Mosquitto, QoS 1.

Per profile, in one process: a real broker (``generic``: an open listener; ``aws-iot``: mutual TLS,
an ACL per thing, 128 KB, as the tests set it up), a real consumer, and the bridge's own outbox and
publisher. Two phases:

1. *sustained*: ``--messages`` telemetry-sized messages (about 300 bytes) accepted into the outbox
   as fast as it takes them while the publisher drains it; the rate is messages over the time
   until the consumer holds every one;
2. *outage*: the broker is stopped, the same number of messages is accepted, the broker starts
   again after ``--outage`` seconds; ``drain_s`` is from its start to the consumer holding every one.

``lost`` counts message ids the consumer never saw (must be 0), ``duplicates`` repeats (allowed:
at least once, same id). ``aws-iot`` is capped at 100 publishes per second by design.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from ..transports.mqtt.config import BridgeConfig, OutboxLimits, Tls
from ..transports.mqtt.outbox import Outbox, OutMessage
from ..transports.mqtt.profiles import KIND_TELEMETRY
from ..transports.mqtt.publisher import Publisher
from .mosquitto import Broker, Pki

PAYLOAD = b'{"envelope":"' + b"A" * 240 + b'","epoch":3,"key_id":"09ee68d2c642c50c","sender":"meter-042","seq":%d}'


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _wait(what: str, check, timeout: float, *, required: bool = True) -> float:
    """Seconds until ``check()``; past ``timeout``: exit (``required``) or go on (so losses get counted)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.01)
    if required:
        raise SystemExit(f"bench bridge: timed out waiting for {what}")
    print(f"bench bridge: {what} did not complete within {timeout:g} s", file=sys.stderr)
    return timeout


def run_profile(profile: str, messages: int, outage_s: float, work: Path) -> dict:
    pki = Pki(work / "pki") if profile == "aws-iot" else None
    broker = Broker(work / f"broker-{profile}", "aws" if pki else "plain", pki, persistence=True).start()
    tls = None
    client_id = f"bench-{profile}"
    if pki is not None:
        cert, key = pki.issue(client_id)
        tls = Tls(ca=pki.ca, cert=cert, key=key)
    cfg = BridgeConfig(
        name=profile,
        profile=profile,
        host="127.0.0.1",
        port=broker.port,
        client_id=client_id,
        mqtt="5",
        tls=tls,
        outbox=OutboxLimits(max_messages=10 * messages, max_bytes=1 << 30),
        reconnect_max_s=1.0,
    )
    prof = cfg.make_profile()
    topic = prof.topic(KIND_TELEMETRY, group="bench")
    outbox = Outbox(work / f"outbox-{profile}.db")
    consumer = broker.subscriber(f"gridkey/{client_id}/#", session=f"consumer-{profile}")
    pub = Publisher(cfg, prof, outbox)
    pub.start()
    peak = 0

    def feed(first: int, n: int) -> None:
        nonlocal peak
        batch = []
        for i in range(first, first + n):
            batch.append(OutMessage(f"bench:{i}:0", KIND_TELEMETRY, topic, PAYLOAD % i, 1, False))
            if len(batch) == 200:
                outbox.accept(profile, batch, i, cfg.outbox)
                pub.wake.set()
                batch = []
                peak = max(peak, outbox.depth(profile)[1])
        if batch:
            outbox.accept(profile, batch, first + n - 1, cfg.outbox)
            pub.wake.set()
        peak = max(peak, outbox.depth(profile)[1])

    def received() -> set[str]:
        return {m.properties.get("msg_id", "") for m in consumer.snapshot()}

    try:
        _wait("the bridge to connect", lambda: pub.status.connected, 30)
        t0 = time.monotonic()
        feed(0, messages)
        # expected time plus a generous margin; then what has not arrived is counted as lost
        patience = 60 + messages / (50 if profile == "aws-iot" else 200)
        _wait("the sustained phase", lambda: len(received()) >= messages, patience, required=False)
        sustained_s = time.monotonic() - t0

        broker.stop()
        _wait("the bridge to notice", lambda: not pub.status.connected, 30)
        t_down = time.monotonic()
        feed(messages, messages)
        time.sleep(max(0.0, outage_s - (time.monotonic() - t_down)))
        broker.start()
        t_up = time.monotonic()
        _wait("the drain", lambda: len(received()) >= 2 * messages, patience, required=False)
        drain_s = time.monotonic() - t_up
        outage = t_up - t_down
        got = [m.properties.get("msg_id", "") for m in consumer.snapshot()]
        want = {f"bench:{i}:0" for i in range(2 * messages)}
        return {
            "profile": profile,
            "messages": messages,
            "publish_rate_msg_s": round(messages / sustained_s, 1),
            "outage_s": round(outage, 2),
            "lost": len(want - set(got)),
            "duplicates": len(got) - len(set(got)),
            "drain_s": round(drain_s, 2),
            "drain_rate_msg_s": round(messages / drain_s, 1),
            "outbox_peak_bytes": peak,
            "rss_mb": _rss_mb(),
        }
    finally:
        pub.stop()
        consumer.close()
        broker.stop()
        outbox.close()


def table(results: list[dict]) -> str:
    cols = ("profile", "messages", "publish_rate_msg_s", "outage_s", "drain_s", "drain_rate_msg_s", "lost",
            "duplicates", "outbox_peak_bytes", "rss_mb")  # fmt: skip
    lines = [" ".join(f"{c:>18}" for c in cols)]
    lines += [" ".join(f"{r[c]!s:>18}" for c in cols) for r in results]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    profiles = ["generic", "aws-iot"] if args.profile == "both" else [args.profile]
    results = []
    with tempfile.TemporaryDirectory(prefix="gridkey-bench-bridge-") as tmp:
        for p in profiles:
            print(f"bench bridge: {p}, {args.messages} messages x 2 phases ...", file=sys.stderr, flush=True)
            results.append(run_profile(p, args.messages, args.outage, Path(tmp)))
    out = {"results": results, "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    if args.json:
        print(json.dumps(out, indent=2))
        print(table(results), file=sys.stderr)
    else:
        print(table(results))
    return 0 if all(r["lost"] == 0 for r in results) else 1
