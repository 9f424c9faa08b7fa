"""`gridkey bench protocol`: the negotiation in one process, every member its own MemberSession.

For each n it runs GridKey in both verification modes and the two baselines, and measures:

* ``member_cpu_ms``: median per-member CPU time (``time.process_time_ns`` around that member's own
  calls) for one full negotiation, pooled over ``repeat`` negotiations;
* ``member_floor_ms``: the same member's cryptographic floor measured in this process: 3 scalar
  multiplications, 2n−2 point additions and the signature checks its mode needs (end-to-end:
  n+5 = 4 coordinator messages, 2 round-1 neighbours, n−1 round-2 peers; attested: 4). The
  ratio ``member_cpu_ms / member_floor_ms`` is what DESIGN.md §6 bounds at 1.3;
* bytes: the largest message a member sends, and everything on the wire (a broadcast counted
  once per recipient, as unicast CoAP would carry it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from ..crypto.rng import SeededRng
from ..crypto.suite import Suite, get_suite
from ..protocol.loopback import Loopback
from ..protocol.messages import Mode
from .baselines import run_centralized, run_lkh

SCHEMES = ("bd-e2e", "bd-attested", "centralized", "lkh")


@dataclass
class Row:
    scheme: str
    suite: str
    n: int
    agree: bool
    member_msg_bytes_max: int
    member_cpu_ms: float
    coordinator_cpu_ms: float
    total_bytes: int
    rounds: int
    member_floor_ms: float | None = None
    floor_ratio: float | None = None


def member_floor_ms(suite: Suite, n: int, mode: Mode, repeat: int = 5) -> float:
    """Median CPU time of the primitive operations a member cannot avoid, on real data."""
    rng = SeededRng(f"floor-{suite.name}-{n}")
    group = suite.group
    key = suite.generate_signing_key(rng)
    msg = b"m" * 120
    sig = key.sign(msg)
    pub = key.public_key
    checks = n + 5 if mode == Mode.E2E else 4
    adds = 2 * n - 2 if n > 2 else 0  # one sub for X_i, 2(n-2) running sums, one final add
    r = group.random_scalar(rng)
    p = group.base_mult(group.random_scalar(rng))
    q = group.base_mult(group.random_scalar(rng))
    samples = []
    for _ in range(repeat):
        t0 = time.process_time_ns()
        group.base_mult(r)
        group.mult(r, p)
        group.mult(r, q)
        acc = p
        for _ in range(adds):
            acc = group.add(acc, q)
        for _ in range(checks):
            pub.verify(sig, msg)
        samples.append(time.process_time_ns() - t0)
    return statistics.median(samples) / 1e6


def run_bd(suite: Suite, n: int, mode: Mode, repeat: int, seed: int) -> Row:
    ids = [f"meter-{i:04d}" for i in range(n)]
    lb = Loopback(suite, ids, seed=seed, mode=mode, timeout_ms=3_600_000)
    cpu: list[int] = []
    coord: list[int] = []
    agree = True
    msg_max = total = 0
    for _ in range(repeat):
        res = lb.run_epoch()
        agree &= res.agree
        cpu.extend(res.member_cpu_ns.values())
        coord.append(res.coordinator_cpu_ns)
        msg_max = max(msg_max, max(res.member_msg_sizes))
        total = res.bytes_to_coordinator + res.bytes_from_coordinator
    floor = member_floor_ms(suite, n, mode, repeat=max(7, 3 * repeat))
    med = statistics.median(cpu) / 1e6
    return Row(
        scheme="bd-e2e" if mode == Mode.E2E else "bd-attested",
        suite=suite.name,
        n=n,
        agree=agree,
        member_msg_bytes_max=msg_max,
        member_cpu_ms=round(med, 3),
        coordinator_cpu_ms=round(statistics.median(coord) / 1e6, 3),
        total_bytes=total,
        rounds=3,
        member_floor_ms=round(floor, 3),
        floor_ratio=round(med / floor, 2) if floor else None,
    )


def run_baseline(name: str, suite: Suite, n: int, repeat: int, seed: int) -> Row:
    fn = run_centralized if name == "centralized" else run_lkh
    results = [fn(suite, n, seed=seed + i) for i in range(repeat)]
    first = results[0]
    return Row(
        scheme=name,
        suite=suite.name,
        n=n,
        agree=all(r.agree for r in results),
        member_msg_bytes_max=max(r.member_msg_bytes_max for r in results),
        member_cpu_ms=round(statistics.median(r.member_cpu_ms for r in results), 3),
        coordinator_cpu_ms=round(statistics.median(r.coordinator_cpu_ms for r in results), 3),
        total_bytes=first.total_bytes,
        rounds=first.rounds,
    )


def run(
    ns: list[int],
    suites: list[str],
    schemes: tuple[str, ...] = SCHEMES,
    repeat: int = 3,
    seed: int = 1,
    progress=None,
) -> list[Row]:
    rows = []
    for suite_name in suites:
        suite = get_suite(suite_name)
        for n in ns:
            for scheme in schemes:
                if progress:
                    progress(f"{scheme:<12} {suite.name} n={n} ...")
                if scheme.startswith("bd-"):
                    mode = Mode.E2E if scheme == "bd-e2e" else Mode.ATTESTED
                    rows.append(run_bd(suite, n, mode, repeat, seed))
                else:
                    rows.append(run_baseline(scheme, suite, n, repeat, seed))
    return rows


def as_json(rows: list[Row]) -> dict:
    return {"results": [asdict(r) for r in rows]}


def table(rows: list[Row]) -> str:
    head = (
        f"{'scheme':<12} {'suite':<5} {'n':>5} {'agree':<5} {'msg B':>6} {'member ms':>10} "
        f"{'floor ms':>9} {'ratio':>6} {'coord ms':>9} {'total B':>9} {'rounds':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        floor = f"{r.member_floor_ms:9.3f}" if r.member_floor_ms is not None else f"{'-':>9}"
        ratio = f"{r.floor_ratio:6.2f}" if r.floor_ratio is not None else f"{'-':>6}"
        lines.append(
            f"{r.scheme:<12} {r.suite:<5} {r.n:>5} {'yes' if r.agree else 'NO':<5} "
            f"{r.member_msg_bytes_max:>6} {r.member_cpu_ms:>10.3f} {floor} {ratio} "
            f"{r.coordinator_cpu_ms:>9.3f} {r.total_bytes:>9} {r.rounds:>6}"
        )
    return "\n".join(lines)
