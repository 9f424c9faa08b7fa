"""Errors and the closed sets of reasons the protocol reports.

Reasons are stable strings: they are counted, stored in the audit log and shown to operators.
"""

from __future__ import annotations

from enum import StrEnum


class ProtocolError(Exception):
    """Base class for everything the protocol core raises on bad input."""


class DecodeError(ProtocolError):
    """Bytes that are not a well-formed message of the expected kind (the decoders' only error)."""


class DropReason(StrEnum):
    """Why an incoming message was dropped. Dropping never ends a session."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    NON_MEMBER = "non_member"
    OTHER_SESSION = "other_session"
    DUPLICATE = "duplicate"
    EQUIVOCATION = "equivocation"  # a second, different message for a slot already filled
    ROLLBACK = "rollback"
    STALE = "stale"
    UNEXPECTED = "unexpected"  # valid message, wrong state
    INVALID_ELEMENT = "invalid_element"
    UNKNOWN_KEY = "unknown_key"
    REPLAY = "replay"
    WRONG_ROLE = "wrong_role"
    # A Start the member's own policy refuses (docs/protocol.md §4.4): reported, never just counted.
    MODE_REFUSED = "mode_refused"  # a mode this member is not provisioned for (a downgrade)
    REVOKED_PEER = "revoked_peer"  # the roster names an identity the newest CRL revokes
    NO_FRESH_CRL = "no_fresh_crl"  # no CA-signed CRL recent enough: revocation fails closed
    KEY_MISMATCH = "key_mismatch"  # a roster entry pairs a member id with another identity's key
    ROSTER_UNAUTHORIZED = "roster_unauthorized"  # strict profile: no newest operator-signed roster covers it


# The reasons a member refuses a whole Start for (Refused events, signed refusal reports).
REFUSAL_REASONS = frozenset(
    {
        DropReason.MODE_REFUSED,
        DropReason.WRONG_ROLE,
        DropReason.REVOKED_PEER,
        DropReason.NO_FRESH_CRL,
        DropReason.KEY_MISMATCH,
        DropReason.ROSTER_UNAUTHORIZED,
    }
)


class AbortReason(StrEnum):
    """Why a session ended without a committed epoch."""

    TIMEOUT = "timeout"
    TRANSCRIPT_MISMATCH = "transcript_mismatch"
    BAD_PEER_SIGNATURE = "bad_peer_signature"
    CONFIRM_MISMATCH = "confirm_mismatch"
    DEGENERATE = "degenerate"
    INVALID_BUNDLE = "invalid_bundle"
    SUPERSEDED = "superseded"
    COORDINATOR_ABORT = "coordinator_abort"
    CANCELLED = "cancelled"


class Rejected(ProtocolError):
    """A well-formed message that is refused; carries the reason it is counted under."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail
