"""The `gridkey` command line.

gridkey bench protocol --n 3,10,25,100 [--suite GK1|GK2] [--json]
gridkey demo            (the sidecar + fleet demo; lands with the gateway sidecar)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__


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
    print("gridkey demo: not yet — the sidecar and fleet land with the gateway issue.")
    print("Meanwhile: `gridkey bench protocol --n 3,10,25` runs the protocol in-process.")
    return 0


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

    demo = sub.add_parser("demo", help="run the sidecar + simulated meters demo")
    demo.add_argument("--keep", action="store_true", help="leave the sidecar running afterwards")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
