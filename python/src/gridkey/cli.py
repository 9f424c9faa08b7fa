"""The `gridkey` command line.

gridkey bench protocol --n 3,10,25,100 [--suite GK1|GK2] [--json]
gridkey demo            (the sidecar + fleet demo; lands with the gateway sidecar)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from . import __version__
from .commands.common import DEFAULT_DATA, host_port


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 2 or v > 1024 for v in values):
        raise argparse.ArgumentTypeError("group sizes must be between 2 and 1024")
    return values


def _cmd_bench_protocol(args: argparse.Namespace) -> int:
    from .bench import protocol_bench

    suites = [args.suite] if args.suite else ["GK1", "GK2"]
    schemes = tuple(args.schemes.split(",")) if args.schemes else protocol_bench.SCHEMES
    unknown = set(schemes) - set(protocol_bench.SCHEMES)
    if unknown:
        print(f"error: unknown scheme(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    rows = protocol_bench.run(args.n, suites, schemes, repeat=args.repeat, seed=args.seed, progress=progress)
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps(protocol_bench.as_json(rows), indent=2))
        print(protocol_bench.table(rows), file=sys.stderr)
    else:
        print(protocol_bench.table(rows))
    print(f"done in {elapsed:.1f} s", file=sys.stderr)
    return 0 if all(r.agree for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .commands import demo

    return demo.run(args)


def _cmd_bench_e2e(args: argparse.Namespace) -> int:
    from .bench import e2e

    return e2e.run(args)


def _cmd_bench_bridge(args: argparse.Namespace) -> int:
    from .bench import bridge

    return bridge.run(args)


def _lazy(module: str, func: str):
    """Import a subcommand's module only when it runs (keeps `gridkey --help` fast)."""

    def call(args: argparse.Namespace) -> int:
        mod = importlib.import_module(f".commands.{module}", __package__)
        return getattr(mod, func)(args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridkey",
        description="GridKey: contributory ECC group keys for smart-metering networks.",
    )
    parser.add_argument("--version", action="version", version=f"gridkey {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = sub.add_parser("bench", help="reproducible benchmarks (JSON + table)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    bp = bench_sub.add_parser(
        "protocol",
        help="in-process negotiation: GridKey (both modes) vs centralized and LKH baselines",
        description=(
            "Runs every scheme in one process, each member its own state machine, and reports "
            "message sizes, per-member and coordinator CPU, and total bytes. Exit status 1 if any "
            "row fails to agree."
        ),
    )
    bp.add_argument("--n", type=_int_list, default=[3, 10, 25, 100], help="group sizes, e.g. 3,10,25,100")
    bp.add_argument("--suite", choices=["GK1", "GK2"], help="one suite (default: both)")
    bp.add_argument("--schemes", help="comma-separated subset of bd-e2e,bd-attested,centralized,lkh")
    bp.add_argument("--repeat", type=int, default=3, help="negotiations per row (default 3)")
    bp.add_argument("--seed", type=int, default=1, help="seed for keys and ephemerals (default 1)")
    bp.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    bp.set_defaults(func=_cmd_bench_protocol)

    be = bench_sub.add_parser(
        "e2e",
        help="sidecar + fleet over real CoAP sockets: rekey latency vs centralized key transport",
        description=(
            "Starts a sidecar process, runs the fleet in this process over CoAP on 127.0.0.1, and times "
            "rekeys from the request to every member holding the new key; then does the same for a "
            "centralized key-transport server over the same transport."
        ),
    )
    be.add_argument("--n", type=_int_list, default=[5, 10, 25, 100], help="group sizes (default 5,10,25,100)")
    be.add_argument("--rekeys", type=int, default=10, help="timed rekeys per size (default 10)")
    be.add_argument("--mode", choices=["e2e", "attested", "both"], default="both", help="GridKey verification mode")
    be.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    be.set_defaults(func=_cmd_bench_e2e)

    bb = bench_sub.add_parser(
        "bridge",
        help="MQTT bridge: QoS 1 messages through the outbox to a local Mosquitto, sustained and after an outage",
        description="Needs Debian mosquitto. Exit status 1 if any message is lost.",
    )
    bb.add_argument("--messages", type=int, default=10_000, help="messages per phase (default 10000)")
    bb.add_argument("--profile", choices=["generic", "aws-iot", "both"], default="generic")
    bb.add_argument("--outage", type=float, default=5.0, help="seconds the broker stays down (default 5)")
    bb.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    bb.set_defaults(func=_cmd_bench_bridge)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data directory (default {DEFAULT_DATA})")
    common.add_argument("--log-level", default="warning", help="debug, info, warning (default), error")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the gateway sidecar (CoAP + REST)",
        description=(
            "Runs the coordinator service with CoAP and REST transports. On first start it creates a local "
            "CA, the gateway identity and an API token key in the data dir (embedded defaults)."
        ),
    )
    serve.add_argument("--db", help="database URL (default: SQLite in the data dir; postgresql://… to scale out)")
    serve.add_argument("--coap", type=host_port, default=("127.0.0.1", 5683), help="CoAP bind (default 127.0.0.1:5683)")
    serve.add_argument("--http", type=host_port, default=("127.0.0.1", 8080), help="HTTP bind (default 127.0.0.1:8080)")
    serve.add_argument("--no-coap", action="store_true", help="do not serve CoAP")
    serve.add_argument("--no-http", action="store_true", help="do not serve the REST API")
    serve.add_argument(
        "--controller",
        action="store_true",
        help="host a controller identity that can send group commands (makes this process a key holder)",
    )
    serve.add_argument("--suite", choices=["GK1", "GK2"], default="GK1", help="default suite for new groups")
    serve.add_argument("--mode", choices=["e2e", "attested"], default="e2e", help="default verification mode")
    serve.add_argument("--session-timeout-ms", type=int, default=10_000, help="negotiation deadline (default 10000)")
    serve.add_argument(
        "--max-session-timeout-ms",
        type=int,
        default=60_000,
        help="each restart of a negotiation doubles its deadline, up to this (default 60000; lossy links)",
    )
    serve.add_argument("--join-window-ms", type=int, default=300, help="batch joins within this window (default 300)")
    serve.add_argument("--jwks-url", help="verify API tokens with this JWKS (e.g. your OIDC provider)")
    serve.add_argument("--issuer", default="gridkey", help="expected token issuer (default gridkey)")
    serve.add_argument(
        "--lwm2m-server",
        help="register every meter (and the gateway) as an LwM2M client with this server, e.g. coap://leshan:5683",
    )
    serve.add_argument("--lwm2m-lifetime", type=int, default=60, help="LwM2M registration lifetime in s (default 60)")
    serve.add_argument(
        "--bridge",
        type=Path,
        action="append",
        metavar="FILE",
        help="forward key-lifecycle metadata and telemetry over MQTT: a TOML file of [[bridge]] tables (repeatable)",
    )
    serve.add_argument(
        "--ca-cert",
        type=Path,
        help="production layout: trust this external CA (its key stays off this host); the gateway identity in "
        "DATA/gateway/ must be issued by it",
    )
    serve.add_argument("--crl", type=Path, help="the CRL file that CA publishes: served to meters, re-read on change")
    serve.add_argument("--ready-file", type=Path, help="write the listening URLs as JSON here once ready")
    serve.set_defaults(func=_lazy("serve", "run"))

    agent_opts = argparse.ArgumentParser(add_help=False)
    agent_opts.add_argument("--server", default="coap://127.0.0.1:5683", help="sidecar URL: coap://… or http://…")
    agent_opts.add_argument("--suite", choices=["GK1", "GK2"], default="GK1", help="key type for new identities")
    agent_opts.add_argument("--reading-interval", type=float, default=0.0, help="send a reading every S seconds")
    agent_opts.add_argument("--resync", type=float, default=10.0, help="catch up with the gateway every S seconds")
    agent_opts.add_argument("--status-file", type=Path, help="keep a JSON status file (metadata only) up to date")
    agent_opts.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default: run until ^C)")
    agent_opts.add_argument("--json", action="store_true", help="print events as JSON lines")
    agent_opts.add_argument(
        "--accept-modes",
        default="e2e",
        help="verification modes this meter takes part in: e2e (default) or e2e,attested. In attested mode the "
        "gateway verifies for the members and can learn the key: opt in only where the gateway is trusted with keys",
    )
    agent_opts.add_argument(
        "--roster-authority",
        action="append",
        type=Path,
        metavar="CERT",
        help="strict roster profile: accept only rosters signed by this operator certificate (repeatable)",
    )
    agent_opts.add_argument(
        "--max-crl-age",
        type=float,
        default=48.0,
        metavar="HOURS",
        help="refuse end-to-end Starts unless the CA's CRL is at most this old (default 48)",
    )

    meter = sub.add_parser(
        "meter",
        parents=[common, agent_opts],
        help="run one meter agent",
        description="One meter: enrols, joins its groups' negotiations, decrypts commands, sends readings.",
    )
    meter.add_argument("--id", required=True, help="meter id (certificate CN)")
    meter.add_argument("--key", help="PEM private key (otherwise provisioned from the data dir's CA)")
    meter.add_argument("--cert", help="PEM certificate")
    meter.add_argument("--ca", help="PEM CA certificate to trust")
    meter.set_defaults(func=_lazy("agents", "meter"))

    fleet = sub.add_parser(
        "fleet",
        parents=[common, agent_opts],
        help="simulate N meters in one process (each its own identity and UDP socket)",
        description="Provisions N identities from the data dir's local CA and runs them as real agents.",
    )
    fleet.add_argument("--count", type=int, required=True, help="number of meters")
    fleet.add_argument("--prefix", default="meter-", help="meter id prefix (default meter-)")
    fleet.add_argument("--start-index", type=int, default=1, help="first meter number (default 1)")
    fleet.set_defaults(func=_lazy("agents", "fleet"))

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="the main job: sidecar + 10 meters, negotiate, readings, a command, join, revoke, summary",
    )
    demo.add_argument("--keep", action="store_true", help="leave the sidecar running afterwards and print its URLs")
    demo.add_argument("--meters", type=int, default=10, help="fleet size (default 10)")
    demo.set_defaults(func=_cmd_demo)

    ca = sub.add_parser("ca", parents=[common], help="the local CA: init, issue, revoke, list, cert")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    ca_init = ca_sub.add_parser("init", parents=[common], help="create the CA, gateway identity and token key")
    ca_init.add_argument("--suite", choices=["GK1", "GK2"], default="GK1")
    ca_issue = ca_sub.add_parser("issue", parents=[common], help="issue a key + certificate")
    ca_issue.add_argument("--id", required=True, help="member id (CN)")
    ca_issue.add_argument("--role", default="meter", help="meter (default), controller, gateway or operator")
    ca_issue.add_argument("--suite", choices=["GK1", "GK2"], default="GK1")
    ca_issue.add_argument("--out", type=Path, help="directory for key.pem and cert.pem")
    ca_rev = ca_sub.add_parser("revoke", parents=[common], help="revoke a certificate serial (hex)")
    ca_rev.add_argument("serial")
    ca_rev.add_argument("--reason", default="keyCompromise")
    ca_sub.add_parser("list", parents=[common], help="list revocations as JSON lines")
    ca_sub.add_parser("cert", parents=[common], help="print the CA certificate (PEM)")
    ca_crl = ca_sub.add_parser("crl", parents=[common], help="write a signed CRL (for gridkey serve --crl)")
    ca_crl.add_argument("--out", type=Path, required=True, help="file to write (DER), replaced atomically")
    ca_crl.add_argument("--days", type=int, default=7, help="validity: nextUpdate this many days ahead (default 7)")
    ca.set_defaults(func=_lazy("admin", "ca"))

    ros = sub.add_parser("roster", help="strict roster profile: operator-signed roster statements")
    ros_sub = ros.add_subparsers(dest="roster_command", metavar="ACTION", required=True)
    rsign = ros_sub.add_parser(
        "sign",
        help="sign a roster statement; prints the JSON body for PUT /v1/groups/{group}/roster",
        description="Members provisioned with --roster-authority accept only rosters such statements allow.",
    )
    rsign.add_argument("--key", type=Path, required=True, help="the operator's private key (PEM)")
    rsign.add_argument("--group", required=True, help="group id")
    rsign.add_argument("--version", type=int, required=True, help="statement version: higher than the last one")
    rsign.add_argument("--cert", type=Path, action="append", required=True, help="a member's certificate (repeatable)")
    rsign.set_defaults(func=_lazy("admin", "roster"))

    tok = sub.add_parser("token", parents=[common], help="mint API tokens for small deployments")
    tok_sub = tok.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    ti = tok_sub.add_parser("issue", parents=[common], help="print a signed ES256 bearer token")
    ti.add_argument("--scope", action="append", help="a scope to grant, repeatable (default: all; operations.md §6)")
    ti.add_argument("--subject", default="operator", help="token subject (shows up as the audit actor)")
    ti.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    ti.add_argument("--issuer", default="gridkey")
    ti.set_defaults(func=_lazy("admin", "token"))

    br = sub.add_parser("bridge", help="MQTT bridges: check a configuration, mint Azure SAS tokens")
    br_sub = br.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)
    bc = br_sub.add_parser(
        "check",
        help="connect each bridge of FILE, publish one probe, print what the broker answered",
        description="Exit status 1 if a probe is not acknowledged (with the reason), 2 if FILE is invalid.",
    )
    bc.add_argument("file", type=Path, help="a TOML file of [[bridge]] tables")
    bc.add_argument("--bridge", help="check only the bridge with this name")
    bc.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the PUBACK (default 20)")
    bc.add_argument("--probe-bytes", type=int, default=0, help="pad the probe to about N bytes (size limits)")
    bc.add_argument("--log-level", default="error")
    bc.set_defaults(func=_lazy("bridge", "check"))
    bs = br_sub.add_parser("sas", help="print an Azure IoT Hub device SAS token (the one a bridge would use now)")
    bs.add_argument("--hub", required=True, help="the hub's host name, e.g. myhub.azure-devices.net")
    bs.add_argument("--device", required=True, help="the device id")
    bs.add_argument("--key-file", required=True, type=Path, help="a file holding the device key (base64)")
    bs.add_argument("--ttl", type=int, default=3600, help="token window in seconds: valid ttl..2*ttl (default 3600)")
    bs.add_argument("--at", type=float, help="mint for this unix time instead of now")
    bs.set_defaults(func=_lazy("bridge", "mint_sas"))

    aud = sub.add_parser("audit", parents=[common], help="the audit log")
    aud_sub = aud.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    av = aud_sub.add_parser("verify", parents=[common], help="recompute the hash chain; exit 1 if broken")
    av.add_argument("--db", help="database URL (default: the data dir's SQLite)")
    av.set_defaults(func=_lazy("admin", "audit_verify"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
