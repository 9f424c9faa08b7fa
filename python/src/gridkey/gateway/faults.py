"""Fault injection for crash-safety tests: kill the process at a named point, on request only.

``GRIDKEY_FAULT`` holds ``kill:<point>[:<count>]``; the process SIGKILLs itself the <count>-th
time (default 1st) execution reaches ``checkpoint(<point>)``. Points (see ``service.py``):

    session-started        after a new session's Start is stored, before commit
    accepted:<round>       after the n-th accepted member message of round 1, 2 or 3 (confirm)
                           is stored, before its transaction commits
    round-complete:<round> after a bundle is stored, before commit
    epoch-commit           after the epoch row is written, before the transaction commits
    epoch-committed        right after the committing transaction has committed

Unset (the default), ``checkpoint`` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
import threading

_spec = os.environ.get("GRIDKEY_FAULT", "")
_point, _count = "", 0
if _spec.startswith("kill:"):
    body = _spec[len("kill:") :]
    name, _, count = body.rpartition(":")
    if name and count.isdigit():
        _point, _count = name, int(count)
    else:
        _point, _count = body, 1
_hits = 0
_lock = threading.Lock()


def checkpoint(point: str) -> None:
    global _hits
    if not _point or point != _point:
        return
    with _lock:
        _hits += 1
        if _hits >= _count:
            os.kill(os.getpid(), signal.SIGKILL)
