"""`gridkey bench e2e`: rekey latency over real CoAP sockets, GridKey vs centralized key transport.

For each group size n: a sidecar process (SQLite, embedded defaults) and, in this process, a
fleet of n meter agents, each with its own UDP socket, all sharing one core. After a warm-up
epoch the bench times ``rekeys`` rekeys, from the REST request to the moment the last member holds
the new key (``KeyEstablished``: after key confirmation and the coordinator's Commit). Then the
same n members run centralized key transport against a key server process over the same
transport; there "holds the key" is the moment the last member has decrypted it.

Bytes per member are CoAP bytes (header, options and payload; block-wise counted per block;
UDP/IP headers excluded) sent and received by a member per rekey, as counted by its link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiocoap
import httpx
from aiocoap.numbers.codes import Code

from ..datadir import DataDir
from ..meter.fleet import Fleet, Provisioned
from ..meter.links import coap_wire_bytes
from ..protocol.policy import MemberPolicy, parse_modes
from .baselines import Rejected, setup_centralized

SEED = 7


@dataclass
class Row:
    scheme: str
    n: int
    agree: bool
    latency_ms_median: float
    latency_ms_p95: float
    bytes_per_member: int
    rekeys: int
    server_cpu_ms: float  # CPU of the sidecar / key server process per rekey (user + system)
    members_cpu_ms: float  # CPU of the fleet process (all n members) per rekey


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc (Linux); 0.0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_pair(pid: int) -> tuple[float, float]:
    """(server process, this process) CPU seconds: where a rekey's time goes, without a profiler."""
    return _proc_cpu_s(pid), time.process_time()


def _per_rekey_ms(before: tuple[float, float], after: tuple[float, float], rekeys: int) -> tuple[float, float]:
    return tuple(round((a - b) * 1000 / rekeys, 1) for a, b in zip(after, before, strict=True))  # type: ignore[return-value]


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


async def _wait_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {proc.poll()})")
        await asyncio.sleep(0.05)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def bench_gridkey(n: int, mode: str, rekeys: int, progress) -> Row:
    from ..transports.rest.auth import issue_token

    work = Path(tempfile.mkdtemp(prefix="gridkey-bench-"))
    coap_port, http_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    proc = _spawn(
        [
            sys.executable,
            "-m",
            "gridkey.cli",
            "serve",
            "--data",
            str(work / "data"),
            "--coap",
            f"127.0.0.1:{coap_port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--session-timeout-ms",
            "60000",
            "--join-window-ms",
            "0",
            "--ready-file",
            str(work / "ready.json"),
        ],
        work / "sidecar.log",
    )
    fleet = None
    try:
        await _wait_file(work / "ready.json", proc, "the sidecar")
        data = DataDir(work / "data")
        ids = [f"meter-{i:04d}" for i in range(n)]
        idents = [Provisioned(m, *data.issue_identity(m, "meter", "GK1")) for m in ids]
        target = {"epoch": 0, "count": 0, "event": asyncio.Event(), "keys": set()}

        def on_event(meter: str, kind: str, info: dict) -> None:
            if kind == "epoch" and info["epoch"] == target["epoch"]:
                target["count"] += 1
                target["keys"].add(info["key_id"])
                if target["count"] == n:
                    target["event"].set()

        fleet = Fleet(
            idents,
            ca_cert=data.local_ca().certificate,
            server=f"coap://127.0.0.1:{coap_port}",
            resync_s=30,
            on_event=on_event,
            policy=MemberPolicy(modes=parse_modes(mode)),  # an attested run needs meters provisioned for it
        )
        await fleet.start(timeout=120)
        token = issue_token(data.token_key().to_pem(), subject="bench", scopes=["read", "groups:rekey"], ttl_s=3600)
        agree = True
        latencies: list[float] = []
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}", headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as http:

            async def epoch(k: int, start) -> float:
                target.update(epoch=k, count=0, event=asyncio.Event(), keys=set())
                t0 = time.perf_counter()
                r = await start()
                r.raise_for_status()
                await asyncio.wait_for(target["event"].wait(), 120)
                return (time.perf_counter() - t0) * 1000

            await epoch(1, lambda: http.post("/v1/groups", json={"group_id": "bench", "members": ids, "mode": mode}))
            agree &= len(target["keys"]) == 1
            before = sum(a.link.bytes_sent + a.link.bytes_received for a in fleet.agents)
            cpu_before = _cpu_pair(proc.pid)
            for k in range(2, rekeys + 2):
                latencies.append(await epoch(k, lambda: http.post("/v1/groups/bench/rekey")))
                agree &= len(target["keys"]) == 1
                if progress:
                    progress(f"  bd-{mode} n={n} rekey {k - 1}/{rekeys}: {latencies[-1]:.1f} ms")
            after = sum(a.link.bytes_sent + a.link.bytes_received for a in fleet.agents)
            cpu = _per_rekey_ms(cpu_before, _cpu_pair(proc.pid), rekeys)
        return Row(
            f"bd-{mode}",
            n,
            agree,
            round(statistics.median(latencies), 2),
            round(p95(latencies), 2),
            round((after - before) / (rekeys * n)),
            rekeys,
            *cpu,
        )
    finally:
        if fleet is not None:
            await fleet.stop()
        _kill(proc)


async def bench_central(n: int, rekeys: int, progress) -> Row:
    work = Path(tempfile.mkdtemp(prefix="gridkey-bench-central-"))
    port = _free_port(socket.SOCK_DGRAM)
    proc = _spawn(
        [
            sys.executable,
            "-m",
            "gridkey.bench.central_server",
            "--port",
            str(port),
            "--n",
            str(n),
            "--seed",
            str(SEED),
            "--db",
            str(work / "kt.db"),
            "--ready-file",
            str(work / "ready.json"),
        ],
        work / "server.log",
    )
    contexts: list[aiocoap.Context] = []
    tasks: list[asyncio.Task] = []
    try:
        await _wait_file(work / "ready.json", proc, "the key server")
        _, members = setup_centralized("GK1", n, seed=SEED)
        base = f"coap://127.0.0.1:{port}/kt"
        state = {"epoch": 0, "count": 0, "event": asyncio.Event(), "bytes": 0, "keys": set()}

        async def member_loop(i: int, ctx: aiocoap.Context) -> None:
            member = members[i]
            req = aiocoap.Message(code=Code.GET, uri=f"{base}/m/{i}", observe=0)
            pr = ctx.request(req)
            first = await pr.response
            remote = first.remote  # reuse the resolved address, as the GridKey meter link does
            state["bytes"] += coap_wire_bytes(req) + coap_wire_bytes(first)
            async for note in pr.observation:
                state["bytes"] += coap_wire_bytes(note)
                try:
                    confirm = member.receive(note.payload)
                except Rejected:
                    continue
                if member.epoch == state["epoch"]:
                    state["count"] += 1
                    state["keys"].add(member.key_id)
                    if state["count"] == n:
                        state["event"].set()
                msg = aiocoap.Message(code=Code.POST, uri_path=("kt", "confirm"), payload=confirm)
                msg.remote = remote
                resp = await ctx.request(msg).response
                state["bytes"] += coap_wire_bytes(msg) + coap_wire_bytes(resp)

        for i in range(n):
            ctx = await aiocoap.Context.create_client_context()
            contexts.append(ctx)
            tasks.append(asyncio.create_task(member_loop(i, ctx)))
        driver = await aiocoap.Context.create_client_context()
        contexts.append(driver)
        await asyncio.sleep(0.5)  # let every observation register
        latencies: list[float] = []
        agree = True
        before = 0
        cpu_before = (0.0, 0.0)
        for k in range(1, rekeys + 2):
            state.update(epoch=k, count=0, event=asyncio.Event(), keys=set())
            t0 = time.perf_counter()
            await driver.request(aiocoap.Message(code=Code.POST, uri=f"{base}/rekey")).response
            await asyncio.wait_for(state["event"].wait(), 120)
            if k == 1:
                before = state["bytes"]
                cpu_before = _cpu_pair(proc.pid)
                continue  # warm-up, like GridKey's first epoch
            latencies.append((time.perf_counter() - t0) * 1000)
            agree &= len(state["keys"]) == 1
            if progress:
                progress(f"  centralized n={n} rekey {k - 1}/{rekeys}: {latencies[-1]:.1f} ms")
        await asyncio.sleep(0.2)  # let the last confirmations land before counting bytes
        cpu = _per_rekey_ms(cpu_before, _cpu_pair(proc.pid), rekeys)
        return Row(
            "centralized",
            n,
            agree,
            round(statistics.median(latencies), 2),
            round(p95(latencies), 2),
            round((state["bytes"] - before) / (rekeys * n)),
            rekeys,
            *cpu,
        )
    finally:
        for t in tasks:
            t.cancel()
        for ctx in contexts:
            with contextlib.suppress(Exception):
                await ctx.shutdown()
        _kill(proc)


def table(rows: list[Row]) -> str:
    head = (
        f"{'scheme':<12} {'n':>4} {'agree':<5} {'median ms':>10} {'p95 ms':>8} {'B/member':>9} {'vs central':>10}"
        f" {'server cpu':>10} {'members cpu':>11}"
    )
    lines = [head, "-" * len(head)]
    central = {r.n: r.latency_ms_median for r in rows if r.scheme == "centralized"}
    for r in rows:
        ratio = f"{r.latency_ms_median / central[r.n]:9.2f}x" if central.get(r.n) else f"{'-':>10}"
        lines.append(
            f"{r.scheme:<12} {r.n:>4} {'yes' if r.agree else 'NO':<5} {r.latency_ms_median:>10.1f} "
            f"{r.latency_ms_p95:>8.1f} {r.bytes_per_member:>9} {ratio} "
            f"{r.server_cpu_ms:>10.1f} {r.members_cpu_ms:>11.1f}"
        )
    lines.append("cpu columns: ms of CPU per rekey, the server process and the process running all members")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    modes = ["e2e", "attested"] if args.mode == "both" else [args.mode]

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows: list[Row] = []
    for n in args.n:
        for mode in modes:
            progress(f"bd-{mode} n={n}: starting sidecar and {n} meters")
            rows.append(asyncio.run(bench_gridkey(n, mode, args.rekeys, progress)))
        progress(f"centralized n={n}: starting key server and {n} members")
        rows.append(asyncio.run(bench_central(n, args.rekeys, progress)))
    doc = {"results": [asdict(r) for r in rows]}
    central = {r.n: r.latency_ms_median for r in rows if r.scheme == "centralized"}
    for r in doc["results"]:
        if r["scheme"] != "centralized" and central.get(r["n"]):
            r["ratio_vs_centralized"] = round(r["latency_ms_median"] / central[r["n"]], 2)
    if args.json:
        print(json.dumps(doc, indent=2))
        print(table(rows), file=sys.stderr)
    else:
        print(table(rows))
    return 0 if all(r.agree for r in rows) else 1
