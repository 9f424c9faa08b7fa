"""Coalesce member messages that arrive together into one database transaction per group.

When a round completes, n meters answer within milliseconds of each other. Processing each answer
in its own write transaction serialises n commits on the session row; the batcher hands whatever
has queued up for a group to :meth:`Gateway.handle_member_messages` in one go, so a round costs a
handful of commits instead of n. Transports call :meth:`submit` (thread-safe) and wait on the
returned future.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from concurrent.futures import Future, InvalidStateError

from .errors import GatewayError
from .service import Gateway, Outcome

MAX_BATCH = 256


class Batcher:
    def __init__(self, gateway: Gateway, workers: int = 1) -> None:
        self.gateway = gateway
        self._q: queue.SimpleQueue[tuple[str, bytes, Future] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"gridkey-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, group_id: str, data: bytes) -> Future:
        fut: Future = Future()
        self._q.put((group_id, data, fut))
        return fut

    def close(self) -> None:
        for _ in self._threads:
            self._q.put(None)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            pending: dict[str, list[tuple[bytes, Future]]] = defaultdict(list)
            pending[item[0]].append((item[1], item[2]))
            count = 1
            while count < MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                pending[nxt[0]].append((nxt[1], nxt[2]))
                count += 1
            for group_id, items in pending.items():
                try:
                    results: list[Outcome | GatewayError] = self.gateway.handle_member_messages(
                        group_id, [d for d, _ in items]
                    )
                except Exception as exc:  # a store failure: report to every waiter
                    for _, fut in items:
                        _settle(fut, exc)
                    continue
                for (_, fut), res in zip(items, results, strict=True):
                    _settle(fut, res)


def _settle(fut: Future, res: Outcome | Exception) -> None:
    """Hand a result to its waiter -- unless the waiter gave up: a CoAP request whose client went
    away is cancelled (its future with it), and setting a cancelled future raises, which used to
    end this thread and with it every later round message (seen after a fleet-wide power cut)."""
    try:
        if isinstance(res, Exception):
            fut.set_exception(res)
        else:
            fut.set_result(res)
    except InvalidStateError:
        pass  # cancelled: the message was handled all the same; nobody is waiting for the answer
