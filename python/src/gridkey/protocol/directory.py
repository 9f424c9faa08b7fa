"""Who is who: verification keys bound to member ids (and roles) by certificates.

The protocol core never parses certificates; adapters verify them (see ``gridkey.crypto.identity``)
and put the result here. A roster entry (member id, kid) is accepted only if the directory binds
that kid to that member id, so a coordinator cannot pair a member id with somebody else's key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..crypto.signatures import VerifyKey
from .messages import RosterEntry

ROLES = ("meter", "controller", "gateway")


@dataclass(frozen=True)
class PeerKey:
    member_id: str
    key: VerifyKey
    role: str = "meter"


class KeyDirectory:
    def __init__(self, peers: Iterable[PeerKey] = ()) -> None:
        self._by_kid: dict[bytes, PeerKey] = {}
        for p in peers:
            self.add(p.member_id, p.key, p.role)

    def add(self, member_id: str, key: VerifyKey, role: str = "meter") -> PeerKey:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        peer = PeerKey(member_id, key, role)
        self._by_kid[key.kid] = peer
        return peer

    def remove(self, kid: bytes) -> None:
        self._by_kid.pop(kid, None)

    def get(self, kid: bytes) -> PeerKey | None:
        return self._by_kid.get(kid)

    def lookup(self, entry: RosterEntry) -> VerifyKey | None:
        """The key for a roster entry, only if the directory binds that kid to that member id."""
        peer = self._by_kid.get(entry.kid)
        if peer is None or peer.member_id != entry.member_id:
            return None
        return peer.key

    def missing(self, roster: Iterable[RosterEntry]) -> tuple[bytes, ...]:
        return tuple(e.kid for e in roster if self.lookup(e) is None)

    def __len__(self) -> int:
        return len(self._by_kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid
