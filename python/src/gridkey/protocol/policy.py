"""What a member decides from its own provisioning, never from a Start (docs/protocol.md §4.4).

A coordinator relays and schedules. It must not be able to choose anything that would let it learn
a key, so the verification mode, who may be a member, and how fresh the revocation list must be are
the member's policy. The gateway proposes a Start; the member's :class:`MemberPolicy` disposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..crypto.identity import MEMBER_ROLES
from ..crypto.signatures import VerifyKey
from .messages import Mode

__all__ = ["MEMBER_ROLES", "MemberPolicy", "parse_modes"]

DEFAULT_MAX_CRL_AGE_MS = 48 * 3600 * 1000  # how long a withheld CRL can hide a revocation; publish daily


@dataclass(frozen=True)
class MemberPolicy:
    """A member's provisioned rules for accepting a Start.

    ``modes``: the verification modes this member takes part in. End-to-end only by default.
    Attested mode is an opt-in for constrained meters: there the coordinator verifies and re-signs
    every member's values, so it can substitute them and learn the key; use it only where the
    gateway host is trusted with keys.

    ``require_crl``: end-to-end Starts need a CA-signed CRL in the directory no older than
    ``max_crl_age_ms`` and not past its nextUpdate (no CRL, no session: revocation fails closed).

    ``roster_authorities``: the strict roster profile. When set, an end-to-end Start is accepted
    only if it carries a roster statement signed by one of these operator keys for this group, at
    least as new as any this member has accepted, whose members include every roster entry: the
    gateway can then leave members out (delay), never add one.
    """

    modes: frozenset[Mode] = frozenset({Mode.E2E})
    require_crl: bool = True
    max_crl_age_ms: int = DEFAULT_MAX_CRL_AGE_MS
    roster_authorities: tuple[VerifyKey, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("a member must accept at least one mode")
        if self.max_crl_age_ms <= 0:
            raise ValueError("max_crl_age_ms must be positive")

    @property
    def strict_roster(self) -> bool:
        return bool(self.roster_authorities)


def parse_modes(text: str) -> frozenset[Mode]:
    """``"e2e"``, ``"attested"`` or ``"e2e,attested"`` (the CLI and config spelling)."""
    names = {"e2e": Mode.E2E, "attested": Mode.ATTESTED}
    out = set()
    for part in (p.strip() for p in text.split(",")):
        if part not in names:
            raise ValueError(f"unknown mode {part!r}: expected e2e or attested")
        out.add(names[part])
    return frozenset(out)
