"""`gridkey meter` and `gridkey fleet`: real protocol participants over CoAP or HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ..crypto.identity import CertificateError, load_certificate, verify_certificate
from ..crypto.signatures import signing_key_from_pem
from ..datadir import DataDir
from ..meter.fleet import Fleet, Provisioned
from ..protocol.policy import MemberPolicy, parse_modes
from .common import say, setup_logging, wait_for_signal


def _provision(data: DataDir, meter_id: str, suite: str) -> Provisioned:
    """Reuse the identity issued for this id earlier, or issue one (factory provisioning)."""
    d = data.path / "issued" / meter_id
    if (d / "cert.pem").exists():
        key, cert = data.load_identity(d)
    else:
        key, cert = data.issue_identity(meter_id, "meter", suite, d)
    return Provisioned(meter_id, key, cert)


def _printer(as_json: bool):
    def on_event(meter: str, kind: str, info: dict) -> None:
        if kind == "reading":
            return
        if as_json:
            print(json.dumps({"meter": meter, "event": kind, **info}), flush=True)
        elif kind == "epoch":
            print(f"{meter}: group {info['group_id']} epoch {info['epoch']} key id {info['key_id']}", flush=True)
        elif kind == "command":
            print(f"{meter}: command in {info['group_id']} from {info['from']}: {info['command']}", flush=True)
        else:
            print(f"{meter}: {kind} {info}", flush=True)

    return on_event


def meter(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.key and args.cert and args.ca:
        key = signing_key_from_pem(Path(args.key).read_bytes())
        cert = load_certificate(Path(args.cert).read_bytes())
        ca_cert = load_certificate(Path(args.ca).read_bytes())
        ident = [Provisioned(args.id, key, cert)]
    else:
        data = DataDir(args.data)
        if not data.exists():
            say(f"error: give --key/--cert/--ca, or --data pointing at a sidecar data dir ({data.path} has no CA)")
            return 2
        ident = [_provision(data, args.id, args.suite)]
        ca_cert = data.local_ca().certificate
    return asyncio.run(_run_fleet(ident, ca_cert, args))


def fleet(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    data = DataDir(args.data)
    if not data.exists():
        say(f"error: {data.path} has no CA; start `gridkey serve --data {data.path}` first (or `gridkey ca init`)")
        return 2
    ids = [f"{args.prefix}{i:03d}" for i in range(args.start_index, args.start_index + args.count)]
    t0 = time.perf_counter()
    idents = []
    for n, mid in enumerate(ids, 1):
        idents.append(_provision(data, mid, args.suite))
        if n % 50 == 0 or n == len(ids):
            say(f"provisioned {n}/{len(ids)} identities ({time.perf_counter() - t0:.1f} s)")
    return asyncio.run(_run_fleet(idents, data.local_ca().certificate, args))


def policy_from_args(args: argparse.Namespace, ca_cert) -> MemberPolicy:
    """The member policy from --accept-modes, --max-crl-age and --roster-authority (operator
    certificates, verified against the CA here: a bad value is a usage error)."""
    try:
        authorities = []
        for path in args.roster_authority or ():
            ident = verify_certificate(Path(path).read_bytes(), ca_cert, now=datetime.now(UTC))
            if ident.role != "operator":
                raise ValueError(f"{path} is a {ident.role} certificate, not an operator's")
            authorities.append(ident.key)
        return MemberPolicy(
            modes=parse_modes(args.accept_modes),
            max_crl_age_ms=int(args.max_crl_age * 3_600_000),
            roster_authorities=tuple(authorities),
        )
    except (OSError, ValueError, CertificateError) as exc:
        raise SystemExit(f"gridkey: {exc}") from None


async def _run_fleet(idents: list[Provisioned], ca_cert, args: argparse.Namespace) -> int:
    f = Fleet(
        idents,
        ca_cert=ca_cert,
        server=args.server,
        reading_interval_s=args.reading_interval,
        resync_s=args.resync,
        status_file=args.status_file,
        on_event=_printer(args.json),
        policy=policy_from_args(args, ca_cert),
    )
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            say(f"enrolled {done}/{total} meters ({time.perf_counter() - t0:.1f} s)")

    try:
        await f.start(progress, wait=False)
    except ValueError as exc:  # a --server URL no link can use
        say(f"error: {exc}")
        return 2

    async def report_stragglers() -> None:
        """Who is still trying to enrol, and why, until nobody is."""
        while True:
            await asyncio.sleep(5.0)
            waiting = f.enrolling()
            if not waiting:
                return
            names = ", ".join(f"{a.meter_id} ({a.enrol_error!r})" for a in waiting[:5])  # repr: gateway text
            more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
            say(f"still trying to enrol {len(waiting)}/{len(f.agents)}: {names}{more}")

    stragglers = asyncio.create_task(report_stragglers())
    say(f"{len(f.agents)} meter(s) running against {args.server}; Ctrl-C to stop")
    try:
        if args.duration:
            await asyncio.sleep(args.duration)
        else:
            await wait_for_signal()
    finally:
        stragglers.cancel()
        await f.stop()
    summary = f.status()
    committed = sum(1 for m in summary["meters"] if any(g["epoch"] for g in m["groups"].values()))
    say(f"stopped: {committed}/{len(summary['meters'])} meters hold a group key")
    never = [a.meter_id for a in f.enrolling()]
    if never:
        say(f"never enrolled: {', '.join(never[:20])}")
    if args.json:
        json.dump(summary, sys.stdout)
    return 1 if never else 0
