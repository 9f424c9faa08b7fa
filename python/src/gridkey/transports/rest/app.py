"""The REST transport: a Flask app that maps HTTP onto the :class:`~gridkey.gateway.Gateway` service.

Two audiences share it. Operators (Node-RED, scripts, the security engineer) use bearer JWTs with
scopes; meters use the unauthenticated endpoints, where every write carries a COSE signature that
the gateway checks. The transport only parses, authorises and encodes: every rule about meters,
groups and sessions lives in the gateway. Request bodies are validated as strictly as the OpenAPI
document describes them (unknown fields are refused), so a client cannot get a write accepted by
accident and the schemathesis run can trust that an invalid request changes nothing.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives import serialization
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from ...gateway import Conflict, Gateway, GatewayError
from ...gateway.batcher import Batcher
from ...protocol import cbor
from ...protocol.messages import ID_RE
from .auth import Principal, TokenError, TokenVerifier
from .metrics import RestMetrics
from .openapi import openapi_document
from .problems import PROBLEM_JSON, TYPE_BASE, ProblemError, bad_request, from_gateway_error, problem
from .sse import LiveConnections, event_stream, group_events

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_WAIT_S = 30.0
ROUND_TIMEOUT_S = 30.0
MAX_LIMIT = 1000
REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
)
SUITES = ("GK1", "GK2")
MODES = ("e2e", "attested")
MAX_INTERVAL_S = 366 * 86400
RAW_TYPES = ("application/cose", "application/octet-stream")
CBOR = "application/cbor"
COSE = "application/cose"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

CommandSender = Callable[[str, bytes], Any]
# (group id, message digest hex, seconds to wait) -> what the sidecar-hosted controller decrypted, or None
ReadingValues = Callable[[str, str, float], dict[str, Any] | None]
MAX_READING_WAIT_S = 10.0


class RestState:
    """What the app keeps beside Flask: live connections (for shutdown) and metrics."""

    def __init__(self, gateway: Gateway, live: LiveConnections, metrics: RestMetrics) -> None:
        self.gateway = gateway
        self.live = live
        self.metrics = metrics

    def close(self) -> None:
        """Wake every event stream and long poll so their worker threads end promptly."""
        self.live.close()


# --- request parsing ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_body(*, required: bool = True) -> dict[str, Any]:
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        if required:
            raise bad_request("a JSON object body is required")
        return {}
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ProblemError(415, "the body must be application/json")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object")
    return value


def check_fields(body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)[:200]}")
    missing = [k for k in required if k not in body]
    if missing:
        raise bad_request(f"missing field(s): {', '.join(missing)}")


def as_int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():  # JSON Schema counts 1.0 as an integer
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad_request(f"{what} must be an integer between {lo} and {hi}")
    return value


def as_str(value: Any, what: str, max_len: int, choices: tuple[str, ...] = ()) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise bad_request(f"{what} must be a non-empty string of at most {max_len} characters")
    if choices and value not in choices:
        raise bad_request(f"{what} must be one of {', '.join(choices)}")
    return value


def as_str_list(value: Any, what: str, max_items: int) -> list[str]:
    if not isinstance(value, list) or len(value) > max_items or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{what} must be a list of at most {max_items} strings")
    return value


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise bad_request(f"query parameter {name} must be an integer") from None
    if not lo <= value <= hi:
        raise bad_request(f"query parameter {name} must be between {lo} and {hi}")
    return value


def query_float(name: str, default: float, lo: float, hi: float) -> float:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise bad_request(f"query parameter {name} must be a number") from None
    if not lo <= value <= hi:  # also refuses nan
        raise bad_request(f"query parameter {name} must be between {lo:g} and {hi:g}")
    return value


def query_id(name: str) -> str | None:
    text = request.args.get(name)
    if text is None:
        return None
    if not ID_RE.fullmatch(text):
        raise bad_request(f"query parameter {name} must match {ID_RE.pattern}")
    return text


def raw_body() -> bytes:
    mimetype = request.mimetype
    if mimetype and mimetype not in RAW_TYPES:
        raise ProblemError(415, f"the body must be {' or '.join(RAW_TYPES)}")
    data = request.get_data(cache=False)
    if not data:
        raise bad_request("the body is empty")
    return data


def cbor_response(value: Any, status: int = 200) -> Response:
    return Response(cbor.dumps(value), status=status, mimetype=CBOR)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(value, default=str), status=status, mimetype="application/json", headers=headers)


# --- auth -----------------------------------------------------------------------------------


def _challenge(**params: str) -> str:
    parts = ['realm="gridkey"'] + [f'{k}="{v.replace(chr(34), chr(39))}"' for k, v in params.items()]
    return "Bearer " + ", ".join(parts)


def authenticate(verifier: TokenVerifier, scope: str) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ProblemError(401, "a bearer token is required", headers={"WWW-Authenticate": _challenge()})
    try:
        principal = verifier.verify(token)
    except TokenError as exc:
        log.info("bearer token refused: %s", exc.detail)  # the reason only, never the token
        if exc.status == 503:
            raise ProblemError(503, exc.detail, headers={"Retry-After": "30"}) from None
        raise ProblemError(
            401,
            exc.detail,
            type_=TYPE_BASE + "invalid-token",
            headers={"WWW-Authenticate": _challenge(error="invalid_token", error_description=exc.detail)},
        ) from None
    if scope not in principal.scopes:
        raise ProblemError(
            403,
            f"this operation needs the {scope!r} scope",
            type_=TYPE_BASE + "insufficient-scope",
            headers={"WWW-Authenticate": _challenge(error="insufficient_scope", scope=scope)},
            scope=scope,
        )
    return principal


def actor() -> str:
    return g.principal.actor


# --- the app --------------------------------------------------------------------------------


def create_app(
    gateway: Gateway,
    *,
    verifier: TokenVerifier,
    batcher: Batcher,
    command_sender: CommandSender | None = None,
    reading_values: ReadingValues | None = None,
    bridges_status: Callable[[], list[dict[str, Any]]] | None = None,
    metrics_registry: CollectorRegistry | None = None,
    max_streams: int = 16,
    max_long_polls: int = 16,
    heartbeat_s: float = 15.0,
) -> Flask:
    """Build the REST app. ``command_sender(group_id, payload)`` is the in-sidecar controller, if any;
    ``reading_values`` looks up what that controller decrypted (readings endpoints).

    Event streams and long polls each hold a server thread, so ``max_streams`` and
    ``max_long_polls`` must stay well below the WSGI server's thread count; over the stream limit a
    client gets 429, over the long-poll limit an inbox request answers at once instead of waiting.
    """
    app = Flask("gridkey.transports.rest", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    live = LiveConnections(max_streams, max_long_polls)
    metrics = RestMetrics(gateway, metrics_registry)
    metrics.sse_streams.set_function(lambda: live.streams.in_use)
    state = RestState(gateway, live, metrics)
    app.extensions["gridkey.rest"] = state
    spec = json.dumps(openapi_document())

    def requires(scope: str) -> Callable:
        def decorate(view: Callable) -> Callable:
            @functools.wraps(view)
            def wrapper(**kwargs: Any) -> Any:
                g.principal = authenticate(verifier, scope)
                return view(**kwargs)

            return wrapper

        return decorate

    # --- errors and bookkeeping -------------------------------------------------------------

    @app.errorhandler(GatewayError)
    def _gateway_error(exc: GatewayError) -> Response:
        return from_gateway_error(exc)

    @app.errorhandler(ProblemError)
    def _problem(exc: ProblemError) -> Response:
        return exc.response()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        detail = {
            404: "no such resource",
            405: f"{request.method} is not allowed here",
            413: f"the request body exceeds {MAX_BODY} bytes",
        }.get(status, exc.description or "")
        return problem(status, detail, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        log.exception("unhandled %s in %s %s", type(exc).__name__, request.method, rule)
        return problem(500, "internal error; the sidecar log has the details")

    @app.before_request
    def _start_timer() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.requests.labels(route, method, str(resp.status_code)).inc()
        if "t0" in g:
            metrics.latency.labels(route, method).observe(time.perf_counter() - g.t0)
        if resp.status_code >= 400 and resp.mimetype == PROBLEM_JSON:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # --- operator API: meters ---------------------------------------------------------------

    @app.get("/v1/meters")
    @requires("read")
    def list_meters() -> Response:
        limit = query_int("limit", 1000, 1, MAX_LIMIT)
        after = query_id("after") or ""
        return json_response(gateway.list_meters(limit=limit, after=after))

    @app.post("/v1/meters")
    @requires("meters:write")
    def enroll_meter() -> Response:
        body = json_body()
        check_fields(body, ("cert_pem",))
        pem = as_str(body["cert_pem"], "cert_pem", 16 * 1024)
        meter = gateway.enroll(pem.encode(), actor=actor())
        return json_response(meter, 201, {"Location": f"/v1/meters/{meter['meter_id']}"})

    @app.get("/v1/meters/<meter_id>")
    @requires("read")
    def get_meter(meter_id: str) -> Response:
        return json_response(gateway.get_meter(meter_id))

    @app.post("/v1/meters/<meter_id>/revoke")
    @requires("meters:write")
    def revoke_meter(meter_id: str) -> Response:
        body = json_body(required=False)
        check_fields(body, (), ("reason",))
        reason = as_str(body.get("reason", "keyCompromise"), "reason", 32, REVOCATION_REASONS)
        return json_response(gateway.revoke(meter_id, reason=reason, actor=actor()))

    # --- operator API: groups ---------------------------------------------------------------

    @app.get("/v1/groups")
    @requires("read")
    def list_groups() -> Response:
        return json_response(gateway.list_groups())

    @app.post("/v1/groups")
    @requires("groups:rekey")
    def create_group() -> Response:
        body = json_body()
        check_fields(body, ("group_id", "members"), ("suite", "mode", "rekey_interval_s"))
        group_id = as_str(body["group_id"], "group_id", 64)
        members = as_str_list(body["members"], "members", 1024)
        suite = as_str(body["suite"], "suite", 8, SUITES) if "suite" in body else None
        mode = as_str(body["mode"], "mode", 16, MODES) if "mode" in body else None
        interval = as_int(body.get("rekey_interval_s", 0), "rekey_interval_s", 0, MAX_INTERVAL_S)
        group = gateway.create_group(
            group_id, members=members, suite=suite, mode=mode, rekey_interval_s=interval, actor=actor()
        )
        return json_response(group, 201, {"Location": f"/v1/groups/{group['group_id']}"})

    @app.get("/v1/groups/<group_id>")
    @requires("read")
    def get_group(group_id: str) -> Response:
        return json_response(gateway.get_group(group_id))

    @app.patch("/v1/groups/<group_id>")
    @requires("groups:rekey")
    def patch_group(group_id: str) -> Response:
        body = json_body()
        check_fields(body, ("rekey_interval_s",))
        seconds = as_int(body["rekey_interval_s"], "rekey_interval_s", 0, MAX_INTERVAL_S)
        return json_response(gateway.set_rekey_interval(group_id, seconds, actor=actor()))

    @app.put("/v1/groups/<group_id>/roster")
    @requires("groups:rekey")
    def put_roster(group_id: str) -> Response:
        body = json_body()
        check_fields(body, ("statement",))
        if not isinstance(body["statement"], str):
            raise bad_request("statement must be a base64 string")
        try:
            data = base64.b64decode(body["statement"], validate=True)
        except ValueError:
            raise bad_request("statement is not valid base64") from None
        return json_response(gateway.set_roster_statement(group_id, data, actor=actor()))

    @app.post("/v1/groups/<group_id>/members")
    @requires("groups:rekey")
    def add_members(group_id: str) -> Response:
        body = json_body()
        check_fields(body, ("members",))
        members = as_str_list(body["members"], "members", 1024)
        return json_response(gateway.add_members(group_id, members, actor=actor()))

    @app.delete("/v1/groups/<group_id>/members/<meter_id>")
    @requires("groups:rekey")
    def remove_member(group_id: str, meter_id: str) -> Response:
        return json_response(gateway.remove_member(group_id, meter_id, actor=actor()))

    @app.post("/v1/groups/<group_id>/rekey")
    @requires("groups:rekey")
    def rekey(group_id: str) -> Response:
        return json_response(gateway.request_rekey(group_id, actor=actor()), 202)

    @app.get("/v1/groups/<group_id>/epochs")
    @requires("read")
    def list_epochs(group_id: str) -> Response:
        limit = query_int("limit", 100, 1, MAX_LIMIT)
        return json_response(gateway.list_epochs(group_id, limit=limit))

    @app.post("/v1/groups/<group_id>/commands")
    @requires("commands:send")
    def send_command(group_id: str) -> Response:
        body = json_body()
        check_fields(body, ("command",))
        payload = json.dumps(body["command"], separators=(",", ":"), ensure_ascii=False).encode()
        gateway.get_group(group_id)  # 400 / 404 before anything is sealed
        if command_sender is None:
            raise Conflict("no controller is configured on this sidecar")
        out = command_sender(group_id, payload)
        gateway.record_command(group_id, actor=actor(), epoch=out.get("epoch"), msg_id=out.get("id"), size=len(payload))
        return json_response(out, 202)

    def with_value(reading: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """Add what the sidecar's controller decrypted (a key holder's view), if it hosts one."""
        if reading_values is None:
            return {**reading, "value_status": "no-controller"}
        release = live.long_polls.try_acquire() if wait_s > 0 else None
        if release is None:
            wait_s = 0.0  # every waiting slot is taken (or none was asked for): answer at once
        try:
            got = reading_values(reading["group_id"], reading["digest"], wait_s)
        finally:
            if release is not None:
                release()
        if got is None:  # not a member of that epoch, no key yet, or refused (forged, replayed)
            return {**reading, "value_status": "not-delivered"}
        return {**reading, "value_status": "decrypted", "value": got.get("value")}

    @app.get("/v1/groups/<group_id>/readings")
    @requires("readings:read")
    def list_readings(group_id: str) -> Response:
        after = query_int("after", 0, 0, 2**62)
        limit = query_int("limit", 100, 1, MAX_LIMIT)
        rows = gateway.readings(group_id, after=after, limit=limit)
        return json_response([with_value(r, 0.0) for r in rows])

    @app.get("/v1/groups/<group_id>/readings/<reading_id>")
    @requires("readings:read")
    def get_reading(group_id: str, reading_id: str) -> Response:
        if not reading_id.isascii() or not reading_id.isdigit() or len(reading_id) > 18:
            raise bad_request("reading id must be a non-negative integer")
        wait_s = query_float("wait", 0.0, 0.0, MAX_READING_WAIT_S)
        return json_response(with_value(gateway.reading(group_id, int(reading_id)), wait_s))

    @app.get("/v1/bridges")
    @requires("read")
    def bridges() -> Response:
        return json_response(bridges_status() if bridges_status is not None else [])

    # --- operator API: audit and events -----------------------------------------------------

    @app.get("/v1/audit")
    @requires("audit:read")
    def audit_entries() -> Response:
        after = query_int("after", 0, 0, 2**62)
        limit = query_int("limit", 200, 1, MAX_LIMIT)
        return json_response(gateway.audit_entries(after=after, limit=limit))

    @app.get("/v1/audit/verify")
    @requires("audit:read")
    def audit_verify() -> Response:
        return json_response(asdict(gateway.verify_audit()))

    @app.get("/v1/events")
    @requires("read")
    def events() -> Response:
        header = request.headers.get("Last-Event-ID")
        if header is not None and header.strip():
            try:
                after = int(header.strip(), 10)
            except ValueError:
                raise bad_request("Last-Event-ID must be an event id") from None
            if not 0 <= after <= 2**62:
                raise bad_request("Last-Event-ID must be an event id")
        elif request.args.get("after") == "now":
            after = None  # from the newest event on; the stream names it first
        else:
            after = query_int("after", 0, 0, 2**62)
        group_id = query_id("group")
        release = live.streams.try_acquire()
        if release is None:
            raise ProblemError(
                429,
                f"too many open event streams (limit {live.streams.limit}); retry later",
                headers={"Retry-After": "5"},
            )
        try:
            body = event_stream(gateway, live, after=after, group_id=group_id, heartbeat_s=heartbeat_s)
            resp = Response(
                body,
                mimetype="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
            resp.call_on_close(release)
        except BaseException:
            release()
            raise
        return resp

    # --- meter-facing (COSE-signed, no token) -----------------------------------------------

    @app.post("/v1/enroll")
    def enroll_signed() -> Response:
        meter = gateway.enroll_signed(raw_body())
        return json_response(meter, 201, {"Location": f"/v1/meters/{meter['meter_id']}"})

    @app.get("/v1/gateway")
    def gateway_info() -> Response:
        trust = gateway.trust
        return json_response(
            {
                "gateway_id": trust.coordinator.gateway_id,
                "cert_pem": trust.coordinator.cert_pem.decode(),
                "ca_pem": trust.ca_pem.decode(),
            }
        )

    @app.get("/v1/crl")
    def crl() -> Response:
        current = gateway.crl()
        if current is None:
            raise ProblemError(404, "this sidecar has no local CA; ask the PKI that issued the meters")
        return Response(current.public_bytes(serialization.Encoding.DER), mimetype="application/pkix-crl")

    @app.get("/v1/meters/<meter_id>/groups")
    def meter_groups(meter_id: str) -> Response:
        """The groups a meter belongs to (HTTP meters poll this where CoAP meters observe)."""
        meter = gateway.get_meter(meter_id)
        return json_response({"meter_id": meter_id, "groups": [m["group_id"] for m in meter["groups"]]})

    @app.get("/v1/groups/<group_id>/certs")
    def group_certs(group_id: str) -> Response:
        return json_response(gateway.group_certificates(group_id))

    @app.post("/v1/groups/<group_id>/rounds")
    def post_round(group_id: str) -> Response:
        data = raw_body()
        future = batcher.submit(group_id, data)
        try:
            outcome = future.result(timeout=ROUND_TIMEOUT_S)
        except TimeoutError:
            raise ProblemError(503, "the gateway is busy; resend the message", headers={"Retry-After": "1"}) from None
        if not outcome.accepted:
            return json_response({"duplicate": True, "state": outcome.state})
        return Response(status=204)

    @app.post("/v1/groups/<group_id>/rejoin")
    def rejoin(group_id: str) -> Response:
        return json_response(gateway.rejoin_signed(group_id, raw_body()))

    @app.post("/v1/groups/<group_id>/refusal")
    def refusal(group_id: str) -> Response:
        return json_response(gateway.report_refusal(group_id, raw_body()))

    @app.get("/v1/groups/<group_id>/session")
    def session_messages(group_id: str) -> Response:
        return cbor_response(gateway.session_messages(group_id))

    @app.get("/v1/groups/<group_id>/session/<kind>")
    def session_message(group_id: str, kind: str) -> Response:
        return Response(gateway.session_message(group_id, kind), mimetype=COSE)

    @app.get("/v1/meters/<meter_id>/groups/<group_id>/inbox")
    def inbox(meter_id: str, group_id: str) -> Response:
        after = query_int("after", 0, 0, 2**62)
        wait_s = query_float("wait", 0.0, 0.0, MAX_WAIT_S)
        cursor, items = gateway.inbox(group_id, meter_id, after=after)  # refuses non-members first
        if items or wait_s <= 0:
            return cbor_response({"cursor": cursor, "items": items})
        release = live.long_polls.try_acquire()
        if release is None:  # every long-poll slot is taken: answer now, the meter polls again
            return cbor_response({"cursor": cursor, "items": items})
        try:
            deadline = time.monotonic() + wait_s
            with group_events(gateway, live, group_id) as arrived:
                # query again after subscribing: an event that landed in between is not missed
                cursor, items = gateway.inbox(group_id, meter_id, after=cursor)
                while not items and not live.closing.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not arrived.wait(remaining):
                        break
                    arrived.clear()
                    cursor, items = gateway.inbox(group_id, meter_id, after=cursor)
        finally:
            release()
        return cbor_response({"cursor": cursor, "items": items})

    @app.post("/v1/groups/<group_id>/data")
    def post_data(group_id: str) -> Response:
        result = gateway.post_data(group_id, raw_body())
        return json_response(result, 200 if result.get("duplicate") else 201)

    @app.get("/v1/groups/<group_id>/data")
    def get_data(group_id: str) -> Response:
        after = query_int("after", 0, 0, 2**62)
        limit = query_int("limit", 200, 1, MAX_LIMIT)
        rows = gateway.data_since(group_id, after=after, limit=limit)
        return cbor_response([[r["id"], r["sender"], r["data"]] for r in rows])

    # --- service endpoints ------------------------------------------------------------------

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(spec, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            stats = gateway.stats()
        except Exception as exc:
            log.warning("health check: store unavailable (%s)", type(exc).__name__)
            return problem(503, "the store is unavailable", headers={"Retry-After": "5"})
        stats.pop("counters", None)
        return json_response({"status": "ok", **stats})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    return app
