"""Events the state machines hand back to their adapters (h11/aioquic style: data in, events out)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AbortReason, DropReason
from .keyschedule import EpochKeys


class Event:
    """Base class of everything ``receive``/``tick`` return."""


@dataclass(frozen=True)
class Send(Event):
    """A member message for the coordinator."""

    data: bytes
    round: int  # 1, 2 or 3 (confirm)


# The coordinator's broadcast kinds, in session order (an abort can end any round).
BROADCAST_KINDS = ("start", "bundle1", "bundle2", "commit", "abort")


@dataclass(frozen=True)
class Broadcast(Event):
    """A coordinator message for every member of the session (start, bundle, commit, abort)."""

    data: bytes
    kind: str  # one of BROADCAST_KINDS


@dataclass(frozen=True)
class Dropped(Event):
    """An incoming message was ignored; the session goes on."""

    reason: DropReason
    detail: str = ""


@dataclass(frozen=True)
class Accepted(Event):
    """Coordinator side: a member message was verified and stored in its slot (persist it)."""

    round: int
    idx: int
    data: bytes


@dataclass(frozen=True)
class RoundComplete(Event):
    round: int


@dataclass(frozen=True)
class Refused(Dropped):
    """Member side: a Start its own policy refuses (mode, roles, revocation, roster authority).

    A Dropped (counted the same way) that adapters also report: status, LwM2M Last Error, log.
    """

    epoch: int = 0  # the refused Start's epoch, so a report names the negotiation it refers to


@dataclass(frozen=True)
class KeysNeeded(Event):
    """The member cannot judge a Start yet: fetch the certificates of ``kids`` (and, if ``crl``, a
    fresh revocation list), then feed the Start again."""

    kids: tuple[bytes, ...]
    crl: bool = False


@dataclass(frozen=True, repr=False)
class KeyEstablished(Event):
    """Member side: this epoch is committed and its keys are ready."""

    keys: EpochKeys

    def __repr__(self) -> str:
        return f"KeyEstablished({self.keys!r})"


@dataclass(frozen=True)
class Committed(Event):
    """Coordinator side: every member confirmed the same key id (the coordinator never sees the key)."""

    group_id: str
    epoch: int
    sid: bytes
    key_id: bytes
    members: tuple[str, ...]


@dataclass(frozen=True)
class Aborted(Event):
    """The session ended without a key. ``excluded`` lists members that missed the deadline."""

    reason: AbortReason
    epoch: int
    sid: bytes
    excluded: tuple[str, ...] = ()
    detail: str = ""
