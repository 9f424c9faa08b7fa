"""REST transport: a Flask app (operator API with bearer JWTs, meter API with COSE-signed bodies),
its OpenAPI document, server-sent events and Prometheus metrics, served by waitress."""

from .app import create_app
from .auth import SCOPES, Principal, TokenError, TokenVerifier, issue_token
from .openapi import openapi_document
from .server import ServerHandle, run_in_thread, serve

__all__ = [
    "SCOPES",
    "Principal",
    "ServerHandle",
    "TokenError",
    "TokenVerifier",
    "create_app",
    "issue_token",
    "openapi_document",
    "run_in_thread",
    "serve",
]
