"""Who is who: verification keys bound to member ids (and roles) by certificates, and what the
newest revocation list says about them.

The protocol core never parses certificates or CRLs; adapters verify them (see
``gridkey.crypto.identity``) and put the result here. A roster entry (member id, kid) is accepted
only if the directory binds that kid to that member id under a role that may hold a group key, so
a coordinator cannot pair a member id with somebody else's key, nor put itself in a roster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..crypto.identity import MEMBER_ROLES, ROLES, Revocation
from ..crypto.signatures import VerifyKey
from .messages import RosterEntry

__all__ = ["ROLES", "KeyDirectory", "PeerKey", "Revocation", "RevocationRollback"]


@dataclass(frozen=True)
class PeerKey:
    member_id: str
    key: VerifyKey
    role: str = "meter"
    serial: int | None = None  # the certificate's serial, for revocation; None for test directories


class RevocationRollback(ValueError):
    """A CRL older than (numbered below) one already applied: a gateway replaying an old list."""


class KeyDirectory:
    def __init__(self, peers: Iterable[PeerKey] = ()) -> None:
        self._by_kid: dict[bytes, PeerKey] = {}
        self.revocation: Revocation | None = None
        self.revoked_kids: dict[bytes, str] = {}  # kid -> member id, of peers a CRL revoked
        for p in peers:
            self.add(p.member_id, p.key, p.role, p.serial)

    def add(self, member_id: str, key: VerifyKey, role: str = "meter", serial: int | None = None) -> PeerKey:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if serial is not None and self.revocation is not None and serial in self.revocation.revoked:
            raise ValueError(f"{member_id}'s certificate is revoked")
        peer = PeerKey(member_id, key, role, serial)
        self._by_kid[key.kid] = peer
        return peer

    def remove(self, kid: bytes) -> None:
        self._by_kid.pop(kid, None)

    def get(self, kid: bytes) -> PeerKey | None:
        return self._by_kid.get(kid)

    def apply_revocation(self, rev: Revocation) -> list[str]:
        """Adopt a newer verified CRL; drop every cached peer it revokes. Returns their member ids.

        A list numbered below the current one is refused (:class:`RevocationRollback`): CRL
        numbers never decrease (RFC 5280 §5.2.3), so a lower one is a replay of an older list.
        """
        if self.revocation is not None and rev.number < self.revocation.number:
            raise RevocationRollback(f"CRL number {rev.number} is below {self.revocation.number}, already applied")
        self.revocation = rev
        gone = [kid for kid, p in self._by_kid.items() if p.serial is not None and p.serial in rev.revoked]
        for kid in gone:
            self.revoked_kids[kid] = self._by_kid.pop(kid).member_id
        return [self.revoked_kids[k] for k in gone]

    def lookup(self, entry: RosterEntry) -> VerifyKey | None:
        """The key for a roster entry: only if the directory binds that kid to that member id, under
        a role that may hold a group key."""
        peer = self._by_kid.get(entry.kid)
        if peer is None or peer.member_id != entry.member_id or peer.role not in MEMBER_ROLES:
            return None
        return peer.key

    def missing(self, roster: Iterable[RosterEntry]) -> tuple[bytes, ...]:
        return tuple(e.kid for e in roster if e.kid not in self._by_kid)

    def __len__(self) -> int:
        return len(self._by_kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid
