#!/usr/bin/env python3
"""Fetch and run the Eclipse Leshan LwM2M demo server with GridKey's object definitions loaded.

    python scripts/leshan.py fetch        download the demo server jar into the cache (idempotent)
    python scripts/leshan.py run          start it on 127.0.0.1, print its URLs; Ctrl-C stops it

Importable too: tests use :func:`fetch`, :func:`cached_jar` and :class:`LeshanServer` (see
``tests/leshan_fixtures.py``). Standard library only, so it runs before the virtualenv exists.

Why it works the way it does:

* **Which jar.** The demo server is published on Maven Central as ``org.eclipse.leshan:leshan-server-demo``
  (up to 2.0.0-M15) and ``leshan-demo-server`` (2.0.0-M16 on), classifier ``jar-with-dependencies``.
  The Maven Central mirror our machines and CI reach serves only ``leshan-server-demo`` 2.0.0-M4, so
  that is the pinned default. A newer one can be chosen with ``--version`` / ``$GRIDKEY_LESHAN_VERSION``
  where Maven Central is fully reachable, or ``$GRIDKEY_LESHAN_JAR`` can point at a jar obtained
  elsewhere (give its version too: the command line differs between versions).
* **Integrity.** The jar is verified against the ``.sha1`` Maven Central publishes beside it; the
  checksum is cached with the jar, so later runs verify the file without touching the network.
* **Cache.** ``$GRIDKEY_CACHE/leshan`` if set, else ``${XDG_CACHE_HOME:-~/.cache}/gridkey/leshan``.
* **Loopback only, free ports.** Every listener is bound to 127.0.0.1 on a port picked free just
  before start (CoAP and CoAPS over UDP and the web UI/REST API; from 2.0.0-M14 also the always-on
  java-coap UDP endpoint, from 2.0.0-M15 CoAP over TCP and over TLS). A port taken in the meantime
  makes Leshan log a bind error: the server is then restarted on new ports.
* **Temporary working directory.** Leshan writes ``Californium*.properties`` into its working
  directory; it runs in a fresh temporary directory that also holds its log, ``leshan.log``.
* **Java 17 module rules.** 2.0.0-M4 serialises registrations with an old Gson that reflects into
  ``java.util``; on Java 17 that fails (HTTP 500 on ``/api/clients``, no SSE events) unless the JVM
  gets ``--add-opens java.base/java.util=ALL-UNNAMED``, which is therefore always passed.
* **Models.** ``-m lwm2m-objects/`` (absolute path). Leshan validates each DDF file and only *logs*
  a file it rejects ("Unable to load object models for ..."); :meth:`LeshanServer.model_load_errors`
  returns those lines so callers can fail loudly.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import http.client
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "2.0.0-M4"
MAVEN_REPO = "https://repo1.maven.org/maven2"
GROUP_PATH = "org/eclipse/leshan"
MIN_JAVA = 17
HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "lwm2m-objects"
# --add-opens: see "Java 17 module rules" above. TieredStopAtLevel=1 (C1 JIT only) halves start-up on a
# 2-core machine (about 2 s instead of 4-6 s) because C2 compiler threads stop competing with start-up;
# a demo server never needs C2's peak speed. $GRIDKEY_LESHAN_JVM_OPTS adds options (e.g. -Xmx512m).
JVM_OPTIONS = ("--add-opens", "java.base/java.util=ALL-UNNAMED", "-XX:TieredStopAtLevel=1")
BIND_ERRORS = ("Address already in use", "BindException", "Failed to bind", "cannot start server endpoint")
MODEL_ERROR = "Unable to load object models"


class LeshanUnavailable(RuntimeError):
    """Leshan cannot be fetched or started here (no jar in the cache, no suitable Java, download failed)."""


class LeshanApiError(RuntimeError):
    """The Leshan REST API answered with an HTTP error."""

    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status
        self.body = body


# --- versions and the jar ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """A Leshan demo server version, and what its name and command line look like."""

    version: str

    @property
    def _milestone(self) -> tuple[int, int]:
        """(major, milestone) with a final release as milestone 10**6; 1.x counts as before every 2.0 milestone."""
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-M(\d+))?", self.version)
        if not m:
            raise ValueError(f"unrecognised Leshan version {self.version!r} (expected e.g. 2.0.0-M4)")
        major = int(m.group(1))
        return major, int(m.group(4)) if m.group(4) else 10**6

    @property
    def artifact(self) -> str:
        major, ms = self._milestone
        return "leshan-demo-server" if (major, ms) >= (2, 16) else "leshan-server-demo"

    @property
    def has_java_coap_udp(self) -> bool:
        """From 2.0.0-M14 the demo always opens a second CoAP/UDP endpoint based on java-coap (``-jh/-jp``)."""
        return self._milestone >= (2, 14)

    @property
    def has_tcp(self) -> bool:
        """From 2.0.0-M15 it always opens CoAP over TCP (``-th/-tp``) and over TLS (``-tsh/-tsp``) too."""
        return self._milestone >= (2, 15)

    @property
    def jar_name(self) -> str:
        return f"{self.artifact}-{self.version}-jar-with-dependencies.jar"

    def url(self, repo: str = MAVEN_REPO) -> str:
        return f"{repo.rstrip('/')}/{GROUP_PATH}/{self.artifact}/{self.version}/{self.jar_name}"


def default_release() -> Release:
    return Release(os.environ.get("GRIDKEY_LESHAN_VERSION") or DEFAULT_VERSION)


def cache_dir() -> Path:
    """Where jars are kept: ``$GRIDKEY_CACHE/leshan``, else ``${XDG_CACHE_HOME:-~/.cache}/gridkey/leshan``."""
    if os.environ.get("GRIDKEY_CACHE"):
        return Path(os.environ["GRIDKEY_CACHE"]).expanduser() / "leshan"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "gridkey" / "leshan"


def _sha1(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(jar: Path) -> bool:
    """True when ``jar`` exists and matches the checksum cached beside it (no network needed)."""
    sha_file = jar.with_name(jar.name + ".sha1")
    if not (jar.is_file() and sha_file.is_file()):
        return False
    return _sha1(jar) == sha_file.read_text().strip()


def cached_jar(release: Release | None = None, directory: Path | None = None) -> Path:
    """The verified jar from ``$GRIDKEY_LESHAN_JAR`` or the cache, without any download.

    Raises :class:`LeshanUnavailable` (with the command that fixes it) when it is not there, so tests
    that must never need the internet can fail or skip with a useful message.
    """
    override = os.environ.get("GRIDKEY_LESHAN_JAR")
    if override:
        jar = Path(override).expanduser()
        if not jar.is_file():
            raise LeshanUnavailable(f"GRIDKEY_LESHAN_JAR={override} does not exist")
        return jar
    release = release or default_release()
    jar = (directory or cache_dir()) / release.jar_name
    if not _verified(jar):
        raise LeshanUnavailable(
            f"Leshan demo server {release.version} is not in the cache ({jar}): "
            "run `make leshan-jar` or `python scripts/leshan.py fetch`"
        )
    return jar


def _http_get(url: str, timeout: float = 60) -> urllib.request.addinfourl:
    req = urllib.request.Request(url, headers={"User-Agent": "gridkey-scripts/leshan.py"})  # noqa: S310
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (https URL built above)


def fetch(
    release: Release | None = None, directory: Path | None = None, *, repo: str | None = None, quiet: bool = False
) -> Path:
    """Download the demo server jar into the cache unless a verified copy is already there; return its path.

    The published ``.sha1`` is fetched first and the jar is streamed to a temporary file in the
    cache directory, hashed on the way, and renamed into place only if the hash matches, so an
    interrupted or corrupted download never leaves a jar that looks valid.
    """
    release = release or default_release()
    repo = repo or os.environ.get("GRIDKEY_MAVEN_REPO") or MAVEN_REPO
    directory = directory or cache_dir()
    jar = directory / release.jar_name
    if _verified(jar):
        return jar
    directory.mkdir(parents=True, exist_ok=True)
    url = release.url(repo)
    try:
        with _http_get(url + ".sha1") as resp:
            expected = resp.read().decode("ascii", "replace").split()[0].strip().lower()
    except (urllib.error.URLError, OSError, IndexError) as exc:
        raise LeshanUnavailable(f"cannot fetch the checksum {url}.sha1: {exc}") from exc
    if not re.fullmatch(r"[0-9a-f]{40}", expected):
        raise LeshanUnavailable(f"unexpected checksum file at {url}.sha1: {expected[:60]!r}")
    if not quiet:
        print(f"leshan: downloading {url}", file=sys.stderr)
    t0 = time.monotonic()
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".jar", dir=directory)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha1(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, _http_get(url, timeout=120) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != expected:
            raise LeshanUnavailable(f"checksum mismatch for {url}: got {h.hexdigest()}, published {expected}")
        if not zipfile.is_zipfile(tmp):
            raise LeshanUnavailable(f"{url} is not a jar")
        tmp.chmod(0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, jar)
        sha_tmp = jar.with_name(f".{jar.name}.sha1.{os.getpid()}")
        sha_tmp.write_text(expected + "\n")
        os.replace(sha_tmp, jar.with_name(jar.name + ".sha1"))
    except (urllib.error.URLError, OSError) as exc:
        raise LeshanUnavailable(f"cannot download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    if not quiet:
        size = jar.stat().st_size / 1e6
        print(f"leshan: {jar} ({size:.1f} MB, sha1 ok) in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return jar


# --- Java ---------------------------------------------------------------------------------------------


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be at least Java 17."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        raise LeshanUnavailable(
            "no java found: install a Java 17 runtime (Debian: openjdk-17-jre-headless, see "
            "scripts/install-system-deps.sh) or set JAVA_HOME"
        )
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30, check=False).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LeshanUnavailable(f"cannot run {candidate} -version: {exc}") from exc
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = (int(m.group(2) or 0) if m.group(1) == "1" else int(m.group(1))) if m else 0
    if major < MIN_JAVA:
        raise LeshanUnavailable(f"{candidate} is Java {major or '?'}; the Leshan demo server needs Java {MIN_JAVA}+")
    return candidate


# --- the running server ----------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now for ``kind`` (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    """The ports of one Leshan instance (0 where that version has no such listener)."""

    coap: int
    coaps: int
    web: int
    java_coap: int = 0
    tcp: int = 0
    tls: int = 0

    @classmethod
    def pick(cls, release: Release, web: int = 0) -> Ports:
        udp, tcp = socket.SOCK_DGRAM, socket.SOCK_STREAM
        return cls(
            coap=free_port(udp),
            coaps=free_port(udp),
            web=web or free_port(tcp),
            java_coap=free_port(udp) if release.has_java_coap_udp else 0,
            tcp=free_port(tcp) if release.has_tcp else 0,
            tls=free_port(tcp) if release.has_tcp else 0,
        )


# Leshan up to at least 2.0.0-M18 binds the TLS endpoint to (-tsh, -tp) instead of (-tsh, -tsp) when a
# host is given (LeshanServerDemo: `new InetSocketAddress(cli.main.jTlsLocalAddress, coapTcpPort)`), which
# collides with the TCP endpoint. Binding TLS to another loopback address makes both fit (Linux routes
# all of 127.0.0.0/8 to lo).
TLS_HOST = "127.0.0.2"


def command_line(java: str, jar: Path, release: Release, ports: Ports, models: Path) -> list[str]:
    """The full ``java ... -jar`` command for this release with every listener on loopback."""
    cmd = [java, *JVM_OPTIONS, *shlex.split(os.environ.get("GRIDKEY_LESHAN_JVM_OPTS", "")), "-jar", str(jar)]
    cmd += ["-lh", HOST, "-lp", str(ports.coap), "-slh", HOST, "-slp", str(ports.coaps)]
    cmd += ["-wh", HOST, "-wp", str(ports.web)]
    if release.has_java_coap_udp:
        cmd += ["-jh", HOST, "-jp", str(ports.java_coap)]
    if release.has_tcp:
        cmd += ["-th", HOST, "-tp", str(ports.tcp), "-tsh", TLS_HOST, "-tsp", str(ports.tls)]
    cmd += ["-m", str(models.resolve())]
    return cmd


@dataclass
class SseEvent:
    """One server-sent event from ``/api/event``: its name (REGISTRATION, UPDATED, NOTIFICATION, ...) and data."""

    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """A live subscription to Leshan's ``/api/event`` stream.

    Connected on construction, so the action that causes the events can be triggered right after.
    Jetty's EventSourceServlet sends the response headers *before* it attaches Leshan's listener
    (``respond()`` then ``open()`` in ``doGet``), and nothing is sent when the listener is attached, so
    an event fired in that gap is lost: seen here about one run in three under load. The constructor
    therefore waits ``settle`` seconds after the headers. A reader thread parses events into a queue,
    which gives :meth:`next` a real timeout independent of Jetty's 10 s heartbeats.
    """

    def __init__(self, url: str, timeout: float = 10, settle: float = 0.5) -> None:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=timeout)
        conn.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers={"Accept": "text/event-stream"}
        )
        # Keep the socket: close() must shut it down, because closing the response from another thread
        # would block on the reader's buffer lock until Jetty's next heartbeat (10 s).
        self._sock = conn.sock
        self._resp = conn.getresponse()
        if self._resp.status != 200:
            body = self._resp.read().decode("utf-8", "replace")
            conn.close()
            raise LeshanApiError(self._resp.status, body, url)
        if self._sock is not None:
            self._sock.settimeout(None)  # the reader thread waits as long as it must; next() has the timeout
        self._queue: queue.Queue[SseEvent | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="leshan-sse", daemon=True)
        self._thread.start()
        time.sleep(settle)

    def _read(self) -> None:
        name, data = "message", []
        try:
            for raw in self._resp:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        self._queue.put(SseEvent(name, "\n".join(data)))
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
        except (OSError, ValueError):
            pass  # closed by close() or by the server going away
        finally:
            self._queue.put(None)

    def next(self, timeout: float = 10) -> SseEvent:
        """The next event; ``TimeoutError`` if none arrives within ``timeout`` s, ``EOFError`` once closed."""
        try:
            ev = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no Leshan event within {timeout} s") from None
        if ev is None:
            self._queue.put(None)
            raise EOFError("event stream closed")
        return ev

    def wait_for(self, event: str, timeout: float = 10) -> SseEvent:
        """Skip events until one named ``event`` arrives (e.g. ``"REGISTRATION"``)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.0, deadline - time.monotonic()))
            if ev.event == event:
                return ev

    def __iter__(self) -> Iterator[SseEvent]:
        with contextlib.suppress(EOFError):
            while True:
                yield self.next(timeout=365 * 86400)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
            self._thread.join(timeout=5)
            with contextlib.suppress(OSError):
                self._resp.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LeshanServer:
    """One Leshan demo server process on loopback; :meth:`start` it, use the URLs and helpers, :meth:`stop` it."""

    def __init__(
        self,
        jar: Path,
        *,
        release: Release | None = None,
        models: Path = MODELS_DIR,
        workdir: Path | None = None,
        web_port: int = 0,
        java: str | None = None,
    ) -> None:
        """``workdir`` (created if missing, kept afterwards) defaults to a temporary directory removed on stop."""
        self.jar = jar
        self.release = release or default_release()
        self.models = models
        self.workdir = workdir
        self.web_port = web_port
        self.java = java
        self.ports: Ports | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.cmd: list[str] = []
        self._own_workdir = False

    # URLs -------------------------------------------------------------------------------------
    @property
    def coap_url(self) -> str:
        return f"coap://{HOST}:{self._ports.coap}"

    @property
    def coaps_url(self) -> str:
        return f"coaps://{HOST}:{self._ports.coaps}"

    @property
    def web_url(self) -> str:
        return f"http://{HOST}:{self._ports.web}/"

    @property
    def urls(self) -> dict[str, str]:
        """Every listener's URL, by name (``web``, ``coap``, ``coaps`` and, for newer versions, more)."""
        p = self._ports
        out = {"web": self.web_url, "coap": self.coap_url, "coaps": self.coaps_url}
        if p.java_coap:
            out["coap (java-coap)"] = f"coap://{HOST}:{p.java_coap}"
        if p.tcp:
            out["coap+tcp"] = f"coap+tcp://{HOST}:{p.tcp}"
            out["coaps+tcp"] = f"coaps+tcp://{TLS_HOST}:{p.tcp}"
        return out

    @property
    def _ports(self) -> Ports:
        if self.ports is None:
            raise RuntimeError("Leshan is not started")
        return self.ports

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("Leshan is not started")
        return self.workdir / "leshan.log"

    # lifecycle -------------------------------------------------------------------------------------
    def restart(self, timeout: float = 60) -> LeshanServer:
        """Stop and start again on the same ports (clients keep their server URL), forgetting every
        registration: what a real server restart looks like to its clients."""
        self._terminate()
        return self.start(timeout, attempts=1, same_ports=True)

    def start(self, timeout: float = 60, attempts: int = 3, same_ports: bool = False) -> LeshanServer:
        """Start Leshan and wait until its REST API answers; retry on new ports after a bind race."""
        if not self.models.is_dir():
            raise LeshanUnavailable(f"models directory {self.models} does not exist")
        self.java = self.java or find_java()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gridkey-leshan-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self._terminate)  # never leave a JVM behind, even if the caller forgets stop()
        last = ""
        for _ in range(attempts):
            if not (same_ports and self.ports):
                self.ports = Ports.pick(self.release, self.web_port)
            self.cmd = command_line(self.java, self.jar, self.release, self.ports, self.models)
            with self.log_path.open("wb") as log:  # a fresh log per attempt: old bind errors must not count
                self.proc = subprocess.Popen(
                    self.cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            outcome = self._wait_ready(timeout)
            if outcome == "ready":
                return self
            last = outcome
            self._terminate()
            if outcome != "bind":
                break
        tail = self.log_tail()
        self._cleanup_workdir()
        raise LeshanUnavailable(f"Leshan did not start ({last}); log:\n{tail}")

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            log = self.log_text()
            if any(e in log for e in BIND_ERRORS):
                return "bind"
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode}"
            try:
                with urllib.request.urlopen(self.web_url + "api/clients", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        # Jetty starts after the CoAP endpoints: a bind error would be logged by now.
                        return "bind" if any(e in self.log_text() for e in BIND_ERRORS) else "ready"
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return f"no answer from {self.web_url} within {timeout} s"

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and remove a working directory we created."""
        self._terminate()
        self._cleanup_workdir()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False

    def __enter__(self) -> LeshanServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers ---------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def model_load_errors(self) -> list[str]:
        """Log lines where Leshan refused a DDF file (it logs them and carries on without the object)."""
        return [line for line in self.log_text().splitlines() if MODEL_ERROR in line]

    def api(self, path: str, *, method: str = "GET", body: Any = None, timeout: float = 15) -> Any:
        """Call the REST API (``path`` like ``clients`` or ``/api/objectspecs/ep``); JSON answers are decoded.

        E.g. ``api("clients/ep/33001/0/1?format=TLV&timeout=5")`` reads a resource through Leshan.
        """
        path = path.lstrip("/")
        url = self.web_url + (path if path.startswith("api/") else "api/" + path)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL)
                raw = resp.read().decode("utf-8", "replace")
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise LeshanApiError(exc.code, exc.read().decode("utf-8", "replace"), url) from None
        if "json" in ctype or raw[:1] in ("[", "{"):
            return json.loads(raw) if raw else None
        return raw

    def events(self, endpoint: str | None = None, timeout: float = 10, settle: float = 0.5) -> EventStream:
        """Subscribe to ``/api/event`` (optionally only for one client endpoint); use as a context manager.

        Returns once the subscription is live (see :class:`EventStream` on ``settle``): open the stream
        first, then cause the events.
        """
        url = self.web_url + "api/event" + (f"?ep={urllib.parse.quote(endpoint)}" if endpoint else "")
        return EventStream(url, timeout=timeout, settle=settle)


# --- CLI --------------------------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        jar = fetch(Release(args.version), args.cache_dir, quiet=args.quiet)
    except (LeshanUnavailable, ValueError) as exc:
        print(f"leshan: {exc}", file=sys.stderr)
        return 1
    print(jar)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_run(args: argparse.Namespace) -> int:
    release = Release(args.version)
    # Ctrl-C, a closed terminal or a supervisor's SIGTERM all mean the same clean shutdown. SIGINT is set
    # explicitly because a shell starting us in the background leaves it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    server: LeshanServer | None = None
    try:
        jar = cached_jar(release, args.cache_dir) if args.offline else fetch(release, args.cache_dir)
        server = LeshanServer(jar, release=release, models=args.models, web_port=args.web_port)
        t0 = time.monotonic()
        server.start()
        assert server.proc is not None
        print(
            f"Leshan {release.version} ({release.artifact}) up in {time.monotonic() - t0:.1f} s, pid {server.proc.pid}"
        )
        for name, url in server.urls.items():
            print(f"  {name:<17} {url}")
        print(f"  {'models':<17} {server.models.resolve()}")
        print(f"  {'log':<17} {server.log_path}")
        print(f"  {'command':<17} {' '.join(server.cmd)}")
        for line in server.model_load_errors():
            print(f"  WARNING: {line}")
        print("Ctrl-C stops it.", flush=True)
        code = server.proc.wait()
        print(f"leshan: exited with status {code}; log:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except (LeshanUnavailable, ValueError) as exc:
        print(f"leshan: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nleshan: stopping", file=sys.stderr)
        return 0
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=default_release().version, help="Leshan demo server version")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"jar cache (default {cache_dir()})")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download the jar into the cache (idempotent) and print its path")
    p_fetch.add_argument("-q", "--quiet", action="store_true")
    p_fetch.set_defaults(func=_cmd_fetch)
    p_run = sub.add_parser("run", help="start Leshan on 127.0.0.1 with lwm2m-objects/ loaded")
    p_run.add_argument("--models", type=Path, default=MODELS_DIR, help="DDF directory (default lwm2m-objects/)")
    p_run.add_argument("--web-port", type=int, default=0, help="web UI port (default: a free one)")
    p_run.add_argument("--offline", action="store_true", help="use the cached jar only, never download")
    p_run.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
