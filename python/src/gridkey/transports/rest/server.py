"""Serving the app with waitress (a production WSGI server, pure Python, no fork model to fight).

``serve`` binds (port 0 picks a free port, for tests and side-by-side replicas) and returns the
server without running it; ``run_in_thread`` runs it in a daemon thread and hands back a handle
whose ``close()`` wakes event streams and long polls first, so shutdown does not wait for them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import waitress
from flask import Flask
from waitress import wasyncore

log = logging.getLogger(__name__)

# waitress rejects bodies above this itself (plain text); between the app's 64 KiB limit and this
# the app answers with a problem+json 413. It keeps a huge upload from being spooled to disk.
MAX_REQUEST_BODY = 1024 * 1024


def serve(app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 32, **options: Any) -> tuple[Any, int]:
    """Create (bind, do not run) a waitress server; returns ``(server, bound_port)``."""
    options.setdefault("max_request_body_size", MAX_REQUEST_BODY)
    options.setdefault("ident", "gridkey")
    options.setdefault("channel_timeout", 120)
    server = waitress.create_server(app, host=host, port=port, threads=threads, **options)
    bound = getattr(server, "effective_port", None)
    if bound is None:  # several sockets (e.g. "localhost" on IPv4 and IPv6): they share the port
        bound = server.effective_listen[0][1]
    return server, int(bound)


@dataclass
class ServerHandle:
    """A server running in a background thread."""

    app: Flask
    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self, timeout: float = 5.0) -> None:
        state = self.app.extensions.get("gridkey.rest")
        if state is not None:
            state.close()  # end SSE streams and long polls so their worker threads return
        self.server.task_dispatcher.shutdown(timeout=timeout)
        sockets = getattr(self.server, "_map", None) or getattr(self.server, "map", None)
        trigger = getattr(self.server, "trigger", None)
        if trigger is not None and self.thread.is_alive():
            # Close from inside the loop thread: the loop ends at once instead of at its next poll timeout.
            trigger.pull_trigger(lambda: wasyncore.close_all(sockets, ignore_all=True))
            self.thread.join(timeout)
        if self.thread.is_alive() or trigger is None:
            wasyncore.close_all(sockets, ignore_all=True)
            self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("REST server thread did not stop within %.1f s", timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_thread(
    app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = 32, **options: Any
) -> ServerHandle:
    """Start serving in a daemon thread; the port is bound before this returns."""
    server, bound = serve(app, host, port, threads, **options)
    thread = threading.Thread(target=server.run, name=f"gridkey-rest-{bound}", daemon=True)
    thread.start()
    return ServerHandle(app, server, thread, host, bound)
