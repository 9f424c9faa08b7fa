"""What a sidecar-hosted member decrypted, kept for the REST API to look up by message digest.

The in-sidecar controller is a group member (a key holder); the gateway service is not. The REST
readings endpoints join the two: the gateway knows a relayed message's public metadata and its
SHA-256 digest, the controller records the value it decrypted under the same digest. The agent
records on its asyncio loop while REST handlers wait on worker threads, hence the condition
variable. Bounded: the oldest entries go first, so a long-running sidecar does not grow.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any

CAPACITY = 4096
MAX_VALUE_BYTES = 2048  # a meter reading is tens of bytes; 4096 x 2 KiB bounds the cache at ~8 MiB


class DeliveredReadings:
    """Digest → the decrypted reading (sender, epoch, seq, value), for the newest ``capacity`` ones."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False

    def on_agent_event(self, kind: str, info: dict[str, Any]) -> None:
        """A :class:`~gridkey.meter.agent.MeterAgent` ``on_event`` hook: keeps the ``reading`` events."""
        if kind == "reading" and isinstance(info.get("digest"), str):
            entry = {k: info[k] for k in ("from", "epoch", "seq", "value") if k in info}
            size = len(json.dumps(entry.get("value"), separators=(",", ":"), default=str))
            if size > MAX_VALUE_BYTES:  # bounded memory: a member may send up to 16 KiB per reading
                entry["value"] = {"omitted": f"{size} bytes, larger than {MAX_VALUE_BYTES}"}
            self.add(info["digest"], entry)

    def add(self, digest: str, entry: dict[str, Any]) -> None:
        with self._cond:
            self._items[digest] = entry
            self._items.move_to_end(digest)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            self._cond.notify_all()

    def get(self, digest: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The entry for ``digest``, waiting up to ``wait_s`` for the controller to decrypt it."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while digest not in self._items:
                remaining = 0.0 if self._closed else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return dict(self._items[digest])

    def close(self) -> None:
        """Wake every waiter (shutdown); they find nothing new and answer at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
