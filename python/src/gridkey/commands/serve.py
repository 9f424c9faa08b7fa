"""`gridkey serve`: run a sidecar until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json

from ..gateway import GatewayConfig
from ..sidecar import Sidecar, SidecarOptions
from .common import say, setup_logging, wait_for_signal


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    bridges = []
    if args.bridge:
        from ..transports.mqtt.config import BridgeConfigError, load_all

        try:
            bridges = load_all(args.bridge)
        except BridgeConfigError as exc:
            say(f"error: {exc}")
            return 2
        for b in bridges:
            if b.telemetry == "decrypted" and not args.controller:
                say(f"error: bridge {b.name!r}: telemetry: 'decrypted' needs --controller (the sidecar decrypts)")
                return 2
    config = GatewayConfig(
        session_timeout_ms=args.session_timeout_ms,
        max_session_timeout_ms=args.max_session_timeout_ms,
        join_window_ms=args.join_window_ms,
        default_suite=args.suite,
        default_mode=1 if args.mode == "attested" else 0,
    )
    opts = SidecarOptions(
        data_dir=args.data,
        db_url=args.db,
        coap=None if args.no_coap else args.coap,
        http=None if args.no_http else args.http,
        controller=args.controller,
        suite=args.suite,
        config=config,
        jwks_url=args.jwks_url,
        token_issuer=args.issuer,
        lwm2m_server=args.lwm2m_server,
        lwm2m_lifetime=args.lwm2m_lifetime,
        bridges=bridges,
        ca_cert_file=args.ca_cert,
        crl_file=args.crl,
    )
    if args.crl and not args.ca_cert:
        say("error: --crl goes with --ca-cert (the local CA makes its own CRLs)")
        return 2
    return asyncio.run(_main(opts, args.ready_file))


async def _main(opts: SidecarOptions, ready_file) -> int:
    sidecar = Sidecar(opts)
    try:
        await sidecar.start()
    except ValueError as exc:  # a data dir that does not fit the layout asked for (e.g. --ca-cert)
        say(f"error: {exc}")
        await sidecar.stop()
        return 2
    info = sidecar.describe()
    say("gridkey sidecar running:")
    for k, v in info.items():
        if v:
            say(f"  {k:<10} {v}")
    if ready_file:
        ready_file.write_text(json.dumps(info))
    try:
        await wait_for_signal()
    finally:
        say("stopping ...")
        await sidecar.stop()
    return 0
