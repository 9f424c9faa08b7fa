"""Real components for cross-component tests: a sidecar process and an in-process meter fleet.

Everything talks over real sockets on 127.0.0.1 with free ports. The sidecar is a `gridkey serve`
subprocess (so it can be killed with SIGKILL); the fleet runs real meter agents on an asyncio loop
in a background thread, so tests can look inside an agent (e.g. to try an old key on new data).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from gridkey.datadir import DataDir
from gridkey.meter.agent import MeterAgent
from gridkey.meter.fleet import Fleet, Provisioned
from gridkey.transports.rest.auth import SCOPES, issue_token


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotYet(Exception):
    """Raised by a ``wait_for`` check whose condition does not hold yet: retried until the deadline."""


# What a component that is starting, restarting or has not written its first file yet raises: "not yet",
# never a verdict. Anything else (an AssertionError from ``SidecarProc.api`` on a 4xx/5xx, members that
# disagree on a key, a KeyError in the check) fails the wait at once instead of being retried into a timeout.
NOT_YET = (NotYet, httpx.TransportError, ConnectionError, FileNotFoundError)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; retry only falsy results and ``NOT_YET`` errors."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except NOT_YET as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last!r}" if last else ""))


class SidecarProc:
    """`gridkey serve` as a child process; restartable on the same ports and data dir."""

    def __init__(
        self,
        workdir: Path,
        *,
        db_url: str | None = None,
        controller: bool = False,
        session_timeout_ms: int = 4000,
        join_window_ms: int = 100,
        coap_port: int | None = None,
        http_port: int | None = None,
        name: str = "sidecar",
        data: DataDir | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.data = data or DataDir(workdir / "data")
        self.db_url = db_url
        self.controller = controller
        self.session_timeout_ms = session_timeout_ms
        self.join_window_ms = join_window_ms
        self._auto_ports = coap_port is None and http_port is None
        self.coap_port = coap_port or free_port(socket.SOCK_DGRAM)
        self.http_port = http_port or free_port(socket.SOCK_STREAM)
        self.name = name
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._atexit = False
        self._client: httpx.Client | None = None

    @property
    def coap_url(self) -> str:
        return f"coap://127.0.0.1:{self.coap_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 60.0) -> SidecarProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "gridkey.cli", "serve",
            "--data", str(self.data.path),
            "--coap", f"127.0.0.1:{self.coap_port}",
            "--http", f"127.0.0.1:{self.http_port}",
            "--session-timeout-ms", str(self.session_timeout_ms),
            "--join-window-ms", str(self.join_window_ms),
            "--ready-file", str(ready),
            "--log-level", "info",
        ]  # fmt: skip
        if self.db_url:
            argv += ["--db", self.db_url]
        if self.controller:
            argv.append("--controller")
        argv += list(self.extra_args)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not self._atexit:
            self._atexit = True
            # Its own session survives the test process: a teardown that fails before stop() must
            # not leave a sidecar running (and holding ports) after pytest exits.
            atexit.register(self.kill)
        self.starts += 1
        try:
            wait_for(
                f"{self.name} to start",
                lambda: ready.exists() or self.proc.poll() is not None,
                timeout,
            )
            if self.proc.poll() is not None:
                if self._auto_ports and self.starts == 1 and "address already in use" in self.tail(5):
                    # free_port() only found the ports free a moment ago; another process (a
                    # client's ephemeral port) took one since. A first start may move elsewhere.
                    self.starts = 0
                    self.coap_port = free_port(socket.SOCK_DGRAM)
                    self.http_port = free_port(socket.SOCK_STREAM)
                    return self.start(timeout)
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            wait_for(
                f"{self.name} /healthz",
                lambda: httpx.get(f"{self.http_url}/healthz").status_code == 200,
            )
        except AssertionError:
            self.kill()
            raise
        return self

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if self._client is not None:
            self._client.close()
            self._client = None

    def restart(self) -> SidecarProc:
        self.kill()
        return self.start()

    def token(self, scopes: list[str] | None = None, ttl_s: int = 3600) -> str:
        return issue_token(
            self.data.token_key().to_pem(),
            subject="tests",
            scopes=scopes or list(SCOPES),
            ttl_s=ttl_s,
        )

    @property
    def http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.http_url,
                headers={"authorization": f"Bearer {self.token()}"},
                timeout=30,
            )
        return self._client

    @property
    def db_path(self) -> Path:
        """The SQLite store (when no ``db_url`` is given)."""
        return self.data.path / "gridkey.db"

    def api(self, method: str, path: str, **kw) -> Any:
        r = self.http.request(method, path, **kw)
        assert r.status_code < 400, f"{method} {path} -> {r.status_code}: {r.text}"
        return r.json() if r.content else None

    def group(self, group_id: str) -> dict:
        return self.api("GET", f"/v1/groups/{group_id}")


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FleetRunner:
    """Real meter agents (one UDP socket / HTTP client each) on a background loop."""

    def __init__(
        self,
        sidecar: SidecarProc,
        ids: list[str],
        *,
        server: str | None = None,
        resync_s: float = 1.0,
        policy=None,
        ca: DataDir | None = None,
        crl_refresh_s: float = 300.0,
    ):
        self.policy = policy
        self.ca = ca  # where identities are issued (default: the sidecar's local CA)
        self.crl_refresh_s = crl_refresh_s
        self.sidecar = sidecar
        self.ids = ids
        self.server = server or sidecar.coap_url
        self.resync_s = resync_s
        self.loop = LoopThread()
        self.fleet: Fleet | None = None
        self.events: list[tuple[str, str, dict]] = []
        self.log = TracebackLog(self.loop.thread)

    def start(self) -> FleetRunner:
        data = self.ca or self.sidecar.data
        idents = [Provisioned(m, *data.issue_identity(m, "meter", "GK1")) for m in self.ids]
        self.fleet = Fleet(
            idents,
            ca_cert=data.local_ca().certificate,
            server=self.server,
            resync_s=self.resync_s,
            on_event=lambda m, k, i: self.events.append((m, k, i)),
            policy=self.policy,
            crl_refresh_s=self.crl_refresh_s,
        )
        self.loop.run(self.fleet.start(timeout=90))  # names who did not enrol
        return self

    def agent(self, meter_id: str) -> MeterAgent:
        assert self.fleet is not None
        return next(a for a in self.fleet.agents if a.meter_id == meter_id)

    def status(self) -> dict[str, dict]:
        assert self.fleet is not None
        return self.loop.call(lambda: {a.meter_id: a.status() for a in self.fleet.agents})

    def key_ids(self, group_id: str, members: list[str] | None = None) -> dict[str, tuple[int, str | None]]:
        st = self.status()
        out = {}
        for mid in members or self.ids:
            g = st[mid]["groups"].get(group_id, {})
            out[mid] = (g.get("epoch", 0), g.get("key_id"))
        return out

    def wait_epoch(self, group_id: str, epoch: int, members: list[str], timeout: float = 30.0) -> str:
        """Wait until every listed member holds ``epoch``; returns the key id they share."""

        def check() -> str | None:
            ks = self.key_ids(group_id, members)
            if all(e >= epoch for e, _ in ks.values()):
                same = {k for e, k in ks.values() if e == epoch}
                assert len(same) <= 1, f"members disagree on epoch {epoch}: {ks}"
                if all(e == epoch for e, _ in ks.values()):
                    return same.pop()
            return None

        try:
            return wait_for(f"epoch {epoch} on {len(members)} members", check, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstate: {self.key_ids(group_id, members)}\n{self.sidecar.tail()}") from None

    def tracebacks(self) -> list[str]:
        """Every traceback the fleet's own thread logged (agents, aiocoap, asyncio): [] in a healthy run."""
        return self.log.tracebacks()

    def stop(self) -> None:
        if self.fleet is not None:
            self.loop.run(self.fleet.stop())
        self.loop.close()
        self.log.close()


class TracebackLog(logging.Handler):
    """Log records with a traceback, from one thread (a fleet's event loop) or all, kept for a test to check.

    Fleets run in the test process, so their ``log.exception`` calls and asyncio's "Task exception
    was never retrieved" land in this process's logging; the thread filter keeps fleets that run
    concurrently (the hostile scenarios) apart.
    """

    def __init__(self, thread: threading.Thread | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.thread = thread
        self.records: list[logging.LogRecord] = []
        logging.getLogger().addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        mine = self.thread is None or record.thread == self.thread.ident
        if mine and record.exc_info and record.exc_info[0] is not None:
            self.records.append(record)

    def tracebacks(self) -> list[str]:
        fmt = logging.Formatter("%(threadName)s %(name)s: %(message)s")
        return [fmt.format(r) for r in list(self.records)]

    def close(self) -> None:
        logging.getLogger().removeHandler(self)
        super().close()


def epoch_problems(epochs: list[dict], events: list[tuple[str, str, dict]], group_id: str) -> list[str]:
    """What the meters' own "epoch" events say against the gateway's committed ``epochs``: every key id a
    meter established is the one the gateway committed for that epoch, no meter holds a key for an
    epoch the gateway never committed or whose roster it is not in, none establishes an epoch twice."""
    committed = {e["epoch"]: e for e in epochs}
    problems, seen = [], set()
    for meter, kind, info in events:
        if kind != "epoch" or info["group_id"] != group_id:
            continue
        e = committed.get(info["epoch"])
        if e is None:
            problems.append(f"{meter} holds a key for epoch {info['epoch']}, which the gateway never committed")
        elif info["key_id"] != e["key_id"]:
            problems.append(f"{meter} holds key {info['key_id']} for epoch {e['epoch']}, the gateway {e['key_id']}")
        elif meter not in e["members"]:
            problems.append(f"{meter} holds epoch {e['epoch']} without being in its roster {e['members']}")
        if (meter, info["epoch"]) in seen:
            problems.append(f"{meter} established epoch {info['epoch']} twice")
        seen.add((meter, info["epoch"]))
    return problems


# The store's sessions table has no constraint tying committed sessions to epochs (the epochs table's
# primary key only forbids two rows per epoch), so these can fail. Plain SQL for SQLite and PostgreSQL.
COMMITTED_SESSION_CHECKS = {
    "an epoch has several committed sessions": "SELECT group_id, epoch, COUNT(*) FROM sessions "
    "WHERE state = 'committed' GROUP BY group_id, epoch HAVING COUNT(*) > 1",
    "an epoch row is not its committed session's": "SELECT e.group_id, e.epoch FROM epochs e "
    "LEFT JOIN sessions s ON s.sid = e.sid WHERE s.sid IS NULL OR s.state <> 'committed' "
    "OR s.group_id <> e.group_id OR s.epoch <> e.epoch",
    "a committed session has no epoch row": "SELECT s.group_id, s.epoch FROM sessions s "
    "LEFT JOIN epochs e ON e.sid = s.sid WHERE s.state = 'committed' AND e.sid IS NULL",
}


def committed_session_problems(query: Callable[[str], list]) -> list[str]:
    """One committed session per epoch, and it is the epoch row's; ``query`` runs SQL on the store."""
    return [f"{what}: {tuple(row)}" for what, sql in COMMITTED_SESSION_CHECKS.items() for row in query(sql)]


def store_query(sidecar: SidecarProc) -> Callable[[str], list]:
    """A read-only ``query`` for :func:`committed_session_problems` on the sidecar's store (SQLite or PostgreSQL)."""

    def query(sql: str) -> list:
        if sidecar.db_url is not None:
            import psycopg  # only the PostgreSQL tests need it

            with psycopg.connect(sidecar.db_url, autocommit=True, connect_timeout=10) as conn:
                return conn.execute(sql).fetchall()
        con = sqlite3.connect(f"file:{sidecar.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    return query


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


# Known tracebacks, each documented by a test or an open issue: (final exception line, where it is raised).
KNOWN_TRACEBACKS: list[tuple[str, str]] = []  # none: aiocoap's UnicodeDecodeError is handled (aiocoap_workarounds)
# aiocoap 0.4.17's message manager, under a burst of CON requests from meters that are being stopped
# (seen twice, only in the broker-outage test's kill -9 phase, 300 readings/s): raised from
# MessageManager._continue_backlog on a received datagram, no GridKey frame between. Undiagnosed; the open
# issue "Tests that can fail, and a fleet that survives the field" tracks it. Only that test tolerates it.
AIOCOAP_BACKLOG_TRACEBACKS = [
    ("AssertionError: backlogs/active_exchange relation violated", "aiocoap/messagemanager.py"),
]


def unexpected_tracebacks(log: str, known: list[tuple[str, str]] = KNOWN_TRACEBACKS) -> list[str]:
    """Tracebacks in a sidecar log other than the ``known`` ones."""
    out = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = block.splitlines()
        last = next((ln for ln in lines[1:] if ln and not ln.startswith((" ", "\t"))), "")
        if any(last.startswith(exc) and where in block for exc, where in known):
            continue
        out.append("\n".join(lines[:30]))
    return out
