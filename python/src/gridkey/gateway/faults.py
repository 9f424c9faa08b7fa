"""Fault injection for crash-safety tests: kill the process at a named point, on request only.

``GRIDKEY_FAULT`` holds ``kill:<point>[:<count>]``; the process SIGKILLs itself the <count>-th
time (default 1st) execution reaches ``checkpoint(<point>)``. ``pause:<point>:<ms>`` instead holds
the first arrival there for ``ms`` milliseconds (e.g. ``pause:epoch-commit:5000`` keeps every member
waiting for a Commit, so a test can cut their power in that window). Points (see ``service.py``):

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
import time

POINTS = frozenset(
    {
        "session-started",
        "accepted:1",
        "accepted:2",
        "accepted:3",
        "round-complete:1",
        "round-complete:2",
        "epoch-commit",
        "epoch-committed",
    }
)


def parse_pause(spec: str) -> tuple[str, int]:
    """``pause:<point>:<ms>`` -> (point, ms)."""
    if not spec.startswith("pause:"):
        return "", 0
    name, _, ms = spec[len("pause:") :].rpartition(":")
    if name in POINTS and ms.isdigit() and int(ms) > 0:
        return name, int(ms)
    raise ValueError(f"GRIDKEY_FAULT={spec!r}: expected pause:<point>:<ms> (points: {', '.join(sorted(POINTS))})")


def parse(spec: str) -> tuple[str, int]:
    """``kill:<point>[:<count>]`` -> (point, count); points themselves may contain a colon."""
    if not spec.startswith("kill:"):
        return "", 0
    body = spec[len("kill:") :]
    if body in POINTS:
        return body, 1
    name, _, count = body.rpartition(":")
    if name in POINTS and count.isdigit() and int(count) > 0:
        return name, int(count)
    raise ValueError(f"GRIDKEY_FAULT={spec!r}: unknown fault point (known: {', '.join(sorted(POINTS))})")


_point, _count = parse(os.environ.get("GRIDKEY_FAULT", ""))
_pause_point, _pause_ms = parse_pause(os.environ.get("GRIDKEY_FAULT", ""))
_hits = 0
_lock = threading.Lock()


def checkpoint(point: str) -> None:
    global _hits, _pause_point
    if _pause_point and point == _pause_point:
        _pause_point = ""  # the first arrival only
        time.sleep(_pause_ms / 1000)
    if not _point or point != _point:
        return
    with _lock:
        _hits += 1
        if _hits >= _count:
            os.kill(os.getpid(), signal.SIGKILL)
