"""Errors the gateway service raises; each transport maps them to its status codes.

The mapping is the same everywhere: Invalid → 400 / 4.00, Unauthorized → 401 / 4.01,
Forbidden → 403 / 4.03, NotFound → 404 / 4.04, Conflict → 409 / 4.09 (CoAP has no 4.09 in
RFC 7252; 4.09 Conflict is RFC 8132's).
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 400
    title = "Bad Request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Invalid(GatewayError):
    status, title = 400, "Bad Request"


class Unauthorized(GatewayError):
    status, title = 401, "Unauthorized"


class Forbidden(GatewayError):
    status, title = 403, "Forbidden"


class NotFound(GatewayError):
    status, title = 404, "Not Found"


class Conflict(GatewayError):
    status, title = 409, "Conflict"
