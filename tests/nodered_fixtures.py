"""Pytest fixtures for real Node-RED processes (registered by ``pytest_plugins`` in conftest.py).

``nodered_tarball`` is the package as ``npm pack`` makes it (once per xdist worker); ``start_nodered``
starts a ``node-red`` of the given major version ("4": Node-RED 4.1 on the machine's Node 20, "5":
Node-RED 5.x on Node 22) with that tarball installed in a fresh user dir, and stops it at teardown.

The fixtures never download: ``make test`` installs the runtimes first (``make nodered-deps``);
without them the tests fail with that command, they are never skipped. The implementation is
``scripts/nodered.py`` (standard library only, also the ``make nodered`` CLI), loaded by path.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import websocket

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    name = "gridkey_scripts_nodered"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "nodered.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


class Comms:
    """The editor's websocket: debug messages and node statuses, as the editor receives them."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url.replace("http://", "ws://") + "/comms", timeout=5)
        for topic in ("debug", "status/#"):
            self.ws.send(json.dumps({"subscribe": topic}))
        self.debug: queue.Queue = queue.Queue()
        self.pending: list[dict] = []
        self.statuses: dict[str, list[dict]] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            if not raw:  # a ping or the close frame
                continue
            for item in json.loads(raw):
                if item["topic"] == "debug":
                    self.debug.put(item["data"])
                elif item["topic"].startswith("status/"):
                    self.statuses.setdefault(item["topic"][7:], []).append(item["data"])

    def next_debug(self, name: str, timeout: float = 30.0) -> Any:
        """The next debug message of the debug node called ``name`` (its payload, parsed).

        Messages of other debug nodes stay queued for their own turn: flows run concurrently.
        """
        end = time.monotonic() + timeout
        while True:
            for i, d in enumerate(self.pending):
                if d.get("name") == name:
                    del self.pending[i]
                    return json.loads(d["msg"]) if d.get("format", "").startswith(("Object", "array")) else d["msg"]
            try:
                self.pending.append(self.debug.get(timeout=max(0.01, end - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no debug output from {name!r} within {timeout} s") from None

    def close(self) -> None:
        self._stop = True
        self.ws.close()
        self._thread.join(5)


@pytest.fixture(scope="session")
def nodered_script() -> ModuleType:
    return load_script()


@pytest.fixture(scope="session")
def nodered_tarball(nodered_script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for rt in nodered_script.RUNTIMES.values():
        try:
            rt.check()
        except nodered_script.NodeRedUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
    return nodered_script.pack(tmp_path_factory.mktemp("npm-pack"))


@pytest.fixture
def start_nodered(nodered_script: ModuleType, nodered_tarball: Path, tmp_path: Path) -> Iterator[Callable]:
    started = []

    def start(runtime: str):
        nr = nodered_script.NodeRed(nodered_script.RUNTIMES[runtime], tmp_path / f"node-red-{runtime}", nodered_tarball)
        nr.prepare()
        started.append(nr)
        return nr.start()

    yield start
    for nr in started:
        nr.stop()
