"""RFC 9457 problem details: the one error shape every REST response uses.

Clients (Node-RED nodes, scripts, schemathesis) can rely on ``application/problem+json`` with
``type``, ``title``, ``status`` and ``detail`` for every 4xx/5xx, whatever raised it: a gateway
error, a bad token, a malformed body, an unknown route or a bug.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from flask import Response

from ...gateway.errors import GatewayError

PROBLEM_JSON = "application/problem+json"
# "about:blank" means "no more than the HTTP status says" (RFC 9457 §4.2.1); the few problems a
# client may want to tell apart programmatically get their own type URI.
ABOUT_BLANK = "about:blank"
TYPE_BASE = "urn:gridkey:problem:"


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = ABOUT_BLANK,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or status_title(status),
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def from_gateway_error(exc: GatewayError) -> Response:
    return problem(exc.status, exc.detail, title=exc.title)


class ProblemError(Exception):
    """Raised inside a view to answer with a problem (validation, auth, limits)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = ABOUT_BLANK,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type_ = type_
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> Response:
        return problem(self.status, self.detail, type_=self.type_, headers=self.headers, **self.extra)


def bad_request(detail: str) -> ProblemError:
    return ProblemError(400, detail)
