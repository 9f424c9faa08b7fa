"""Fan-out of gateway events to the transports (CoAP Observe, server-sent events, bridges).

Events are rows in the store, so every replica sees every event: after a local commit the gateway
publishes its own events at once, and a poller picks up the ones other replicas wrote. Subscribers
are called on the publishing thread; they must hand work to their own loop and return quickly.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from ..store import Store
from ..store.schema import events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayEvent:
    id: int
    ts: int
    kind: str
    group_id: str | None = None
    meter_id: str | None = None
    body: dict = field(default_factory=dict)
    data: bytes | None = None  # a coordinator message or a group data ciphertext

    def public(self) -> dict:
        """The JSON shape used by SSE, bridges and the REST API (metadata only)."""
        out = {"id": self.id, "ts": self.ts, "kind": self.kind, **self.body}
        if self.group_id:
            out["group_id"] = self.group_id
        if self.meter_id:
            out["meter_id"] = self.meter_id
        return out


def row_to_event(row) -> GatewayEvent:
    return GatewayEvent(row.id, row.ts, row.kind, row.group_id, row.meter_id, json.loads(row.body), row.data)


class EventHub:
    def __init__(self, window: int = 4096) -> None:
        self._subs: list[Callable[[GatewayEvent], None]] = []
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._window = window
        self.last_id = 0

    def subscribe(self, fn: Callable[[GatewayEvent], None]) -> Callable[[], None]:
        with self._lock:
            self._subs.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subs:
                    self._subs.remove(fn)

        return unsubscribe

    def publish(self, ev: GatewayEvent) -> None:
        with self._lock:
            if ev.id in self._seen:
                return
            self._seen.add(ev.id)
            self._order.append(ev.id)
            while len(self._order) > self._window:
                self._seen.discard(self._order.popleft())
            self.last_id = max(self.last_id, ev.id)
            subs = list(self._subs)
        for fn in subs:
            try:
                fn(ev)
            except Exception:  # a broken subscriber must not stop the others
                log.exception("event subscriber failed")

    def poll(self, store: Store, slack: int = 256) -> int:
        """Publish events written by other replicas; returns how many were new."""
        with store.read() as conn:
            # Ids first: most of the slack window was published already, and full rows carry
            # messages (a membership test needs no lock; publish() checks again under it).
            ids = conn.scalars(
                select(events.c.id).where(events.c.id > max(0, self.last_id - slack)).order_by(events.c.id).limit(2000)
            ).all()
            new = [i for i in ids if i not in self._seen]
            rows = conn.execute(select(events).where(events.c.id.in_(new)).order_by(events.c.id)).all() if new else []
        before = len(self._seen)
        for row in rows:
            self.publish(row_to_event(row))
        return max(0, len(self._seen) - before)
