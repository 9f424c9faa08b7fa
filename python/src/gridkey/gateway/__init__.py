"""The coordinator service (gateway sidecar core). Knows the store and the protocol, no transport."""

from .config import GatewayConfig
from .errors import Conflict, Forbidden, GatewayError, Invalid, NotFound, Unauthorized
from .hub import EventHub, GatewayEvent
from .service import Gateway, Outcome, wall_ms
from .trust import CoordinatorIdentity, Trust

__all__ = [
    "Conflict",
    "CoordinatorIdentity",
    "EventHub",
    "Forbidden",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayEvent",
    "Invalid",
    "NotFound",
    "Outcome",
    "Trust",
    "Unauthorized",
    "wall_ms",
]
