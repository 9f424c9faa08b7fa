"""`gridkey bridge check FILE` and `gridkey bridge sas`: try a bridge configuration, mint Azure tokens."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .common import say, setup_logging


def check(args: argparse.Namespace) -> int:
    """Connect each bridge of FILE, publish one probe through an outbox, print what the broker said."""
    setup_logging(args.log_level)
    from ..transports.mqtt.config import BridgeConfigError, load
    from ..transports.mqtt.outbox import Outbox, OutMessage
    from ..transports.mqtt.profiles import KIND_PROBE
    from ..transports.mqtt.publisher import Publisher

    try:
        configs = load(args.file)
    except BridgeConfigError as exc:
        say(f"error: {exc}")
        return 2
    if args.bridge:
        configs = [c for c in configs if c.name == args.bridge]
        if not configs:
            say(f"error: {args.file} has no bridge named {args.bridge!r}")
            return 2
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gridkey-bridge-check-") as tmp:
        outbox = Outbox(Path(tmp) / "probe.db")
        for cfg in configs:
            profile = cfg.make_profile()
            body = {"msg_id": f"probe:{int(time.time() * 1000)}", "kind": "probe", "bridge": cfg.name}
            if args.probe_bytes:
                body["padding"] = "x" * max(0, args.probe_bytes - len(json.dumps(body)) - 16)
            payload = json.dumps(body, separators=(",", ":")).encode()
            topic = profile.topic(KIND_PROBE, event_kind="probe")
            probe = OutMessage(body["msg_id"], KIND_PROBE, topic, payload, cfg.qos, False)
            outbox.accept(cfg.name, [probe], 0, cfg.outbox)
            pub = Publisher(cfg, profile, outbox)
            pub.start()
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                counters = outbox.counters(cfg.name)
                if counters["published"] or counters["dead_lettered"]:
                    break
                time.sleep(0.05)
            pub.stop()
            counters = outbox.counters(cfg.name)
            st = pub.status
            report = {
                "bridge": cfg.name,
                "profile": cfg.profile,
                "broker": st.broker,
                "connack": st.last_connack,
                "topic": topic,
                "probe_bytes": len(payload),
                "published": bool(counters["published"]),
            }
            if counters["dead_lettered"]:
                report["refused"] = outbox.dead_letters(cfg.name, 1)[0]["reason"]
            elif not counters["published"]:
                report["error"] = st.last_error or f"no PUBACK within {args.timeout:g} s"
            print(json.dumps(report), flush=True)
            if not report["published"]:
                failed += 1
                say(f"{cfg.name}: FAILED: {report.get('refused') or report.get('error')}")
            else:
                say(f"{cfg.name}: ok ({st.broker} answered {st.last_connack}; probe acknowledged)")
        outbox.close()
    return 1 if failed else 0


def mint_sas(args: argparse.Namespace) -> int:
    """Print a device SAS token for Azure IoT Hub (the token a bridge with this key would use now)."""
    from ..transports.mqtt import sas

    try:
        key = sas.decode_key(Path(args.key_file).read_text())
    except OSError as exc:
        say(f"error: cannot read {args.key_file}: {exc.strerror}")
        return 2
    except ValueError as exc:
        say(f"error: {args.key_file}: {exc}")
        return 2
    if not 5 <= args.ttl <= 365 * 86400:
        say("error: --ttl must be 5 seconds to 365 days")
        return 2
    expiry, _ = sas.window(time.time() if args.at is None else args.at, args.ttl)
    sys.stdout.write(sas.token(args.hub, args.device, key, expiry) + "\n")
    say(f"valid until {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(expiry))} (unix {expiry})")
    return 0
