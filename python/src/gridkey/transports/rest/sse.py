"""Server-sent events of key and membership metadata, and the waiting behind long polls.

A stream first replays what the client missed from the store (``Last-Event-ID`` or ``?after=``),
then forwards live events from the hub. The hub calls subscribers on the publishing thread (a
gateway transaction), so the subscriber only drops the event into a bounded :class:`queue.Queue`
and the WSGI worker thread that serves the stream does the writing. Each stream and each long
poll pins a worker thread, so both are bounded; a client too slow to keep its queue drained is
disconnected and resumes from the store with ``Last-Event-ID`` instead of growing memory.

Only :meth:`GatewayEvent.public` goes on the wire: metadata, never the ``data`` bytes.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ...gateway import Gateway, GatewayEvent

REPLAY_PAGE = 500
QUEUE_SIZE = 1024
RETRY_MS = 3000


def format_event(ev: GatewayEvent) -> str:
    data = json.dumps(ev.public(), separators=(",", ":"), sort_keys=True, default=str)
    return f"id: {ev.id}\nevent: {ev.kind}\ndata: {data}\n\n"


class Slots:
    """A counted, non-blocking limit (streams, long polls) that can say how many are in use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> Callable[[], None] | None:
        """A release function (idempotent), or None when every slot is taken."""
        with self._lock:
            if self.in_use >= self.limit:
                return None
            self.in_use += 1
        done = threading.Event()

        def release() -> None:
            with self._lock:
                if not done.is_set():
                    done.set()
                    self.in_use -= 1

        return release


class LiveConnections:
    """Everything that blocks a worker thread on the hub, so that shutdown can wake it at once."""

    def __init__(self, max_streams: int, max_long_polls: int) -> None:
        self.streams = Slots(max_streams)
        self.long_polls = Slots(max_long_polls)
        self.closing = threading.Event()
        self._wakers: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    def add_waker(self, fn: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._wakers.add(fn)

        def remove() -> None:
            with self._lock:
                self._wakers.discard(fn)

        return remove

    def close(self) -> None:
        self.closing.set()
        with self._lock:
            wakers = list(self._wakers)
        for fn in wakers:
            fn()


def event_stream(
    gateway: Gateway,
    live: LiveConnections,
    *,
    after: int | None,
    group_id: str | None,
    heartbeat_s: float,
) -> Iterator[str]:
    """The body of ``GET /v1/events``: replay from the store, then live events, with keepalives.

    ``after=None`` starts at the newest event and says which one in a data-less ``id:`` field,
    which sets the client's Last-Event-ID (WHATWG HTML §9.2.6) without dispatching an event, so a
    client that connects "from now" and reconnects before any event arrives misses nothing.
    """
    q: queue.Queue[GatewayEvent | None] = queue.Queue(maxsize=QUEUE_SIZE)
    overflow = threading.Event()

    def on_event(ev: GatewayEvent) -> None:
        if group_id is not None and ev.group_id != group_id:
            return
        try:
            q.put_nowait(ev)
        except queue.Full:
            overflow.set()

    def wake() -> None:
        try:
            q.put_nowait(None)
        except queue.Full:
            overflow.set()

    # Subscribe before reading the store so nothing committed in between is missed; whatever the
    # replay already covered is skipped by id below.
    unsubscribe = gateway.hub.subscribe(on_event)
    unwake = live.add_waker(wake)
    try:
        yield f"retry: {RETRY_MS}\n\n"  # also gets the headers out before the first event
        if after is None:
            after = gateway.latest_event_id()
            yield f"id: {after}\n\n"
        floor = after
        while not live.closing.is_set():
            page = gateway.events_since(floor, limit=REPLAY_PAGE, group_id=group_id)
            for ev in page:
                yield format_event(ev)
            if page:
                floor = page[-1].id
            if len(page) < REPLAY_PAGE:
                break
        next_beat = time.monotonic() + heartbeat_s
        while not live.closing.is_set() and not overflow.is_set():
            try:
                ev = q.get(timeout=max(0.0, next_beat - time.monotonic()))
            except queue.Empty:
                yield ": keepalive\n\n"
                next_beat = time.monotonic() + heartbeat_s
                continue
            if ev is None:
                break
            if ev.id > floor:  # live events are unique (the hub dedupes); ids up to floor were replayed
                yield format_event(ev)
    finally:
        unwake()
        unsubscribe()


@contextmanager
def group_events(gateway: Gateway, live: LiveConnections, group_id: str) -> Iterator[threading.Event]:
    """An event that is set whenever ``group_id`` gets an event carrying bytes (what an inbox holds).

    Enter it *before* the first inbox query, so an event landing between the query and the wait
    is not missed. Shutdown sets it too (check ``live.closing``).
    """
    arrived = threading.Event()

    def on_event(ev: GatewayEvent) -> None:
        if ev.group_id == group_id and ev.data is not None:
            arrived.set()

    unsubscribe = gateway.hub.subscribe(on_event)
    unwake = live.add_waker(arrived.set)
    try:
        yield arrived
    finally:
        unwake()
        unsubscribe()
