"""The OpenAPI 3.1 document of the REST transport, kept by hand next to the code it describes.

Hand-kept rather than generated because it is a contract for other teams (Node-RED nodes, meter
firmware, OIDC integrators): a reviewer should see every change to it. A test checks that the
Flask URL map and this document list the same operations, and schemathesis fuzzes the live server
from it, so it cannot silently drift from the code. Request schemas are exactly as strict as the
handlers (``additionalProperties: false``, the same enums and bounds).
"""

from __future__ import annotations

import copy
from typing import Any

from .auth import SCOPES

ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
REASONS = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]
MAX_INTERVAL_S = 366 * 86400


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _binary(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}


_ID = {"type": "string", "pattern": ID_PATTERN, "maxLength": 64}
_MS = {"type": "integer", "description": "milliseconds since the Unix epoch"}
_NULL_MS = {"type": ["integer", "null"], "description": "milliseconds since the Unix epoch"}
_HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; every 4xx/5xx response has this shape.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "description": "about:blank or urn:gridkey:problem:<name>"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "scope": {"type": "string", "description": "the missing scope (403 insufficient-scope)"},
        },
    },
    "Meter": {
        "type": "object",
        "required": ["meter_id", "role", "kid", "fingerprint", "serial", "not_after", "status", "enrolled_at"],
        "properties": {
            "meter_id": _ID,
            "role": {"type": "string", "enum": ["meter", "controller"]},
            "kid": _HEX,
            "fingerprint": {"type": "string"},
            "serial": _HEX,
            "not_after": _MS,
            "status": {"type": "string", "enum": ["active", "revoked"]},
            "enrolled_at": _MS,
            "revoked_at": _NULL_MS,
            "revoke_reason": {"type": ["string", "null"]},
            "groups": {
                "type": "array",
                "description": "only on GET /v1/meters/{meter_id}",
                "items": _ref("MemberRef"),
            },
        },
    },
    "MemberRef": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "meter_id": _ID,
            "group_id": _ID,
            "status": {"type": "string", "enum": ["active", "lagging", "removed"]},
            "refusal": {
                "type": "object",
                "description": "the newest Start this member reported refusing (signed), until it commits again",
                "required": ["detail", "epoch", "at"],
                "properties": {"detail": {"type": "string"}, "epoch": {"type": "integer"}, "at": _MS},
            },
        },
    },
    "Session": {
        "type": "object",
        "required": ["sid", "epoch", "attempt", "state", "members"],
        "properties": {
            "sid": _HEX,
            "epoch": {"type": "integer"},
            "attempt": {"type": "integer"},
            "state": {"type": "string"},
            "trigger": {"type": "string"},
            "members": {"type": "array", "items": _ID},
            "started_at": _MS,
            "deadline": _MS,
            "ended_at": _NULL_MS,
            "result": {"type": ["string", "null"]},
            "excluded": {"type": "array", "items": _ID},
        },
    },
    "Group": {
        "type": "object",
        "required": ["group_id", "suite", "mode", "rekey_interval_s", "epoch", "members"],
        "properties": {
            "group_id": _ID,
            "suite": {"type": "string", "enum": ["GK1", "GK2"]},
            "mode": {"type": "string", "enum": ["e2e", "attested"]},
            "rekey_interval_s": {"type": "integer"},
            "epoch": {"type": "integer", "description": "the current (last committed) epoch, 0 before the first"},
            "key_id": {"type": ["string", "null"], "description": "hex key id of the current epoch (not a key)"},
            "members": {"type": "array", "items": _ref("MemberRef")},
            "epoch_members": {"type": "array", "items": _ID},
            "last_rekey_at": _NULL_MS,
            "last_negotiation_ms": {"type": ["integer", "null"]},
            "session": {"oneOf": [_ref("Session"), {"type": "null"}]},
            "roster_version": {
                "type": ["integer", "null"],
                "description": "strict roster profile: the version of the operator's roster statement in force",
            },
        },
    },
    "RosterStatement": {
        "type": "object",
        "additionalProperties": False,
        "required": ["statement"],
        "properties": {
            "statement": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "an operator-signed roster statement (COSE_Sign1), as `gridkey roster sign` prints it",
            }
        },
    },
    "RekeyAccepted": {
        "allOf": [
            _ref("Group"),
            {
                "type": "object",
                "required": ["request_id", "target_epoch"],
                "properties": {
                    "request_id": {
                        "type": "integer",
                        "description": (
                            "the pending change this request queued; the `session.started` (or `session.idle`) "
                            "event whose `requests` lists it names the epoch that carries the rekey"
                        ),
                    },
                    "target_epoch": {
                        "type": "integer",
                        "description": (
                            "the lowest epoch that can carry this request (a negotiation already under way keeps "
                            "its roster and ephemerals; a superseded one is replaced by one of the same number)"
                        ),
                    },
                },
            },
        ]
    },
    "Reading": {
        "type": "object",
        "description": (
            "A relayed reading: the public metadata the gateway sees, plus `value` when this sidecar hosts a "
            "controller that decrypted it (which makes the sidecar process a key holder)."
        ),
        "required": ["id", "group_id", "sender", "key_id", "seq", "size", "digest", "received_at", "value_status"],
        "properties": {
            "id": {"type": "integer"},
            "group_id": _ID,
            "sender": _ID,
            "epoch": {"type": ["integer", "null"], "description": "the epoch of key_id (null once pruned)"},
            "key_id": _HEX,
            "seq": {"type": "integer", "description": "the sender's sequence number in that epoch"},
            "size": {"type": "integer", "description": "bytes of the protected message"},
            "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the message"},
            "received_at": _MS,
            "value_status": {
                "type": "string",
                "enum": ["decrypted", "not-delivered", "no-controller"],
                "description": (
                    "decrypted: `value` holds what the controller decrypted; not-delivered: the controller has not "
                    "decrypted it (not a member of that epoch, no key yet, or the message was refused); "
                    "no-controller: this sidecar hosts no controller and holds no key"
                ),
            },
            "value": {"description": 'the decrypted reading (JSON; `{"hex": ...}` if it was not JSON)'},
        },
    },
    "Bridge": {
        "type": "object",
        "description": "One MQTT bridge (gridkey serve --bridge): connection, outbox and counters. No credentials.",
        "required": ["name", "profile", "broker", "connected", "outbox", "counters"],
        "properties": {
            "name": {"type": "string"},
            "profile": {"type": "string", "enum": ["generic", "aws-iot", "azure-iot-hub"]},
            "broker": {"type": "string", "description": "host:port"},
            "client_id": {"type": "string"},
            "mqtt": {"type": "string", "enum": ["3.1.1", "5"]},
            "telemetry": {"type": "string", "enum": ["envelope", "decrypted", "off"]},
            "connected": {"type": "boolean"},
            "connected_since": {"type": ["integer", "null"], "description": "unix seconds"},
            "reconnects": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "outbox": {
                "type": "object",
                "properties": {
                    "messages": {"type": "integer"},
                    "bytes": {"type": "integer"},
                    "max_messages": {"type": "integer"},
                    "max_bytes": {"type": "integer"},
                    "full": {"type": "string", "enum": ["reject-new", "drop-oldest"]},
                },
            },
            "counters": {
                "type": "object",
                "description": "enqueued, published, dead_lettered, rejected_full, dropped_full, publish_failures",
                "additionalProperties": {"type": "integer"},
            },
            "cloud": {"type": "object", "description": "shadow / twin answers: accepted, rejected, last"},
            "token_expires_at": {"type": ["integer", "null"], "description": "azure-iot-hub SAS expiry, unix s"},
            "dead_letters": {"type": "array", "items": {"type": "object"}, "description": "the newest five"},
        },
    },
    "Epoch": {
        "type": "object",
        "required": ["epoch", "key_id", "sid", "members"],
        "properties": {
            "epoch": {"type": "integer"},
            "key_id": _HEX,
            "sid": _HEX,
            "members": {"type": "array", "items": _ID},
            "trigger": {"type": "string"},
            "started_at": _MS,
            "committed_at": _MS,
            "duration_ms": {"type": "integer"},
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["seq", "ts", "actor", "action", "subject", "details", "hash"],
        "properties": {
            "seq": {"type": "integer"},
            "ts": _MS,
            "actor": {"type": "string", "description": "token:<sub>, meter:<id>, member:<id> or gateway"},
            "action": {"type": "string"},
            "subject": {"type": "string"},
            "details": {"type": "object"},
            "hash": _HEX,
        },
    },
    "AuditVerify": {
        "type": "object",
        "required": ["ok", "entries", "head", "problem"],
        "properties": {
            "ok": {"type": "boolean"},
            "entries": {"type": "integer"},
            "head": _HEX,
            "problem": {"type": "string"},
        },
    },
    "GatewayInfo": {
        "type": "object",
        "required": ["gateway_id", "cert_pem", "ca_pem"],
        "properties": {"gateway_id": _ID, "cert_pem": {"type": "string"}, "ca_pem": {"type": "string"}},
    },
    "GroupCertificate": {
        "type": "object",
        "required": ["meter_id", "role", "status", "cert_pem"],
        "properties": {
            "meter_id": _ID,
            "role": {"type": "string"},
            "status": {"type": "string"},
            "cert_pem": {"type": "string"},
        },
    },
    "MeterGroups": {
        "type": "object",
        "required": ["meter_id", "groups"],
        "properties": {"meter_id": _ID, "groups": {"type": "array", "items": _ID}},
    },
    "RejoinResult": {
        "type": "object",
        "required": ["group_id", "meter_id", "status"],
        "properties": {"group_id": _ID, "meter_id": _ID, "status": {"type": "string"}},
    },
    "RefusalResult": {
        "type": "object",
        "required": ["group_id", "meter_id", "epoch", "reason"],
        "properties": {"group_id": _ID, "meter_id": _ID, "epoch": {"type": "integer"}, "reason": {"type": "string"}},
    },
    "DataPosted": {
        "type": "object",
        "required": ["id", "duplicate"],
        "properties": {"id": {"type": "integer"}, "duplicate": {"type": "boolean"}},
    },
    "Duplicate": {
        "type": "object",
        "required": ["duplicate"],
        "properties": {"duplicate": {"const": True}, "state": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "meters", "groups", "live_sessions", "epochs"],
        "properties": {
            "status": {"const": "ok"},
            "meters": {"type": "integer"},
            "groups": {"type": "integer"},
            "live_sessions": {"type": "integer"},
            "epochs": {"type": "integer"},
        },
    },
    "EnrollRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["cert_pem"],
        "properties": {
            "cert_pem": {
                "type": "string",
                "minLength": 1,
                "maxLength": 16384,
                "description": "PEM certificate issued by the sidecar's CA",
            }
        },
    },
    "RevokeRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string", "enum": REASONS, "default": "keyCompromise"}},
    },
    "GroupCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["group_id", "members"],
        "properties": {
            "group_id": _ID,
            "members": {"type": "array", "items": _ID, "maxItems": 1024, "uniqueItems": True},
            "suite": {"type": "string", "enum": ["GK1", "GK2"]},
            "mode": {"type": "string", "enum": ["e2e", "attested"]},
            "rekey_interval_s": {"type": "integer", "minimum": 0, "maximum": MAX_INTERVAL_S, "default": 0},
        },
    },
    "GroupPatch": {
        "type": "object",
        "additionalProperties": False,
        "required": ["rekey_interval_s"],
        "properties": {
            "rekey_interval_s": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_INTERVAL_S,
                "description": "0 turns periodic rekeying off",
            }
        },
    },
    "MembersAdd": {
        "type": "object",
        "additionalProperties": False,
        "required": ["members"],
        "properties": {"members": {"type": "array", "items": _ID, "maxItems": 1024, "uniqueItems": True}},
    },
    "CommandRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["command"],
        "properties": {"command": {"description": "any JSON; sealed for the group as its compact JSON encoding"}},
    },
}

_PROBLEM = {"application/problem+json": {"schema": _ref("Problem")}}
RESPONSES: dict[str, Any] = {
    name: {"description": text, "content": _PROBLEM}
    for name, text in {
        "BadRequest": "The request is malformed or violates a rule (problem+json).",
        "Unauthorized": "Missing, malformed, expired or untrusted bearer token (WWW-Authenticate: Bearer).",
        "Forbidden": "The token lacks the scope, or the gateway refuses the signed request.",
        "NotFound": "No such meter, group or message.",
        "Conflict": "The request conflicts with the current state.",
        "TooLarge": "The request body exceeds 64 KiB.",
        "Unsupported": "The body's media type is not accepted here.",
        "TooMany": "Too many open event streams; retry after the Retry-After delay.",
        "Unavailable": "A dependency (store, token keys) is unavailable, or the gateway is busy.",
    }.items()
}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": where == "path" or required,
        "schema": schema,
        "description": description,
    }


P_METER = _param("meter_id", "path", _ID, "meter id (the certificate's subject)")
P_GROUP = _param("group_id", "path", _ID, "group id")
P_KIND = _param(
    "kind", "path", {"type": "string", "enum": ["start", "bundle1", "bundle2", "commit", "abort"]}, "message kind"
)


def P_LIMIT(default: int) -> dict:
    return _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": default}, "page size")


P_AFTER = _param(
    "after", "query", {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}, "return ids after this one"
)


def _op(
    op_id: str,
    summary: str,
    tag: str,
    ok: dict[str, Any],
    *,
    scope: str | None = None,
    params: tuple[dict, ...] = (),
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = (),
    description: str | None = None,
) -> dict[str, Any]:
    responses = dict(ok)
    codes = {"BadRequest": "400", "Forbidden": "403", "NotFound": "404", "Conflict": "409", "TooLarge": "413"}
    codes |= {"Unsupported": "415", "TooMany": "429", "Unavailable": "503"}
    wanted = list(errors)
    if body is not None:
        wanted += ["BadRequest", "TooLarge", "Unsupported"]
    if scope is not None:
        wanted += ["Unauthorized", "Forbidden"]
        codes["Unauthorized"] = "401"
    for name in wanted:
        responses[codes[name]] = {"$ref": f"#/components/responses/{name}"}
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = body
    op["security"] = [{"bearer": [scope]}] if scope else []
    return op


def _json_body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


_RAW_BODY = {
    "required": True,
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in ("application/cose", "application/octet-stream")
    },
}

_GROUP_OK = _json(_ref("Group"), "the group")
_E = ("BadRequest", "NotFound")

PATHS: dict[str, Any] = {
    "/v1/meters": {
        "get": _op(
            "listMeters",
            "List enrolled meters",
            "meters",
            {"200": _json({"type": "array", "items": _ref("Meter")}, "meters by id")},
            scope="read",
            params=(P_LIMIT(1000), _param("after", "query", _ID, "return meters whose id sorts after this one")),
            errors=("BadRequest",),
        ),
        "post": _op(
            "enrollMeter",
            "Enrol a meter certificate (idempotent)",
            "meters",
            {"201": _json(_ref("Meter"), "the meter")},
            scope="meters:write",
            body=_json_body("EnrollRequest"),
            errors=("Conflict",),
        ),
    },
    "/v1/meters/{meter_id}": {
        "get": _op(
            "getMeter",
            "One meter and its groups",
            "meters",
            {"200": _json(_ref("Meter"), "the meter")},
            scope="read",
            params=(P_METER,),
            errors=_E,
        ),
    },
    "/v1/meters/{meter_id}/revoke": {
        "post": _op(
            "revokeMeter",
            "Revoke a meter: certificate, memberships, immediate rekey without it",
            "meters",
            {"200": _json(_ref("Meter"), "the revoked meter")},
            scope="meters:write",
            params=(P_METER,),
            body=_json_body("RevokeRequest", required=False),
            errors=_E,
        ),
    },
    "/v1/groups": {
        "get": _op(
            "listGroups",
            "List groups",
            "groups",
            {"200": _json({"type": "array", "items": _ref("Group")}, "groups")},
            scope="read",
        ),
        "post": _op(
            "createGroup",
            "Create a group and start its first key negotiation",
            "groups",
            {"201": _json(_ref("Group"), "the group")},
            scope="groups:rekey",
            body=_json_body("GroupCreate"),
            errors=("NotFound", "Conflict"),
        ),
    },
    "/v1/groups/{group_id}": {
        "get": _op(
            "getGroup",
            "One group: members, epoch, live session",
            "groups",
            {"200": _GROUP_OK},
            scope="read",
            params=(P_GROUP,),
            errors=_E,
        ),
        "patch": _op(
            "updateGroup",
            "Set the periodic rekey interval",
            "groups",
            {"200": _GROUP_OK},
            scope="groups:rekey",
            params=(P_GROUP,),
            body=_json_body("GroupPatch"),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/roster": {
        "put": _op(
            "setRosterStatement",
            "Strict roster profile: make an operator-signed roster statement the group's membership, and rekey",
            "groups",
            {"200": _GROUP_OK},
            scope="groups:rekey",
            params=(P_GROUP,),
            body=_json_body("RosterStatement"),
            errors=(*_E, "Conflict"),
        ),
    },
    "/v1/groups/{group_id}/members": {
        "post": _op(
            "addMembers",
            "Add members (one rekey for a burst of joins)",
            "groups",
            {"200": _GROUP_OK},
            scope="groups:rekey",
            params=(P_GROUP,),
            body=_json_body("MembersAdd"),
            errors=(*_E, "Conflict"),
        ),
    },
    "/v1/groups/{group_id}/members/{meter_id}": {
        "delete": _op(
            "removeMember",
            "Remove a member (immediate rekey without it)",
            "groups",
            {"200": _GROUP_OK},
            scope="groups:rekey",
            params=(P_GROUP, P_METER),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/rekey": {
        "post": _op(
            "rekeyGroup",
            "Request a new epoch now",
            "groups",
            {"202": _json(_ref("RekeyAccepted"), "rekey under way")},
            scope="groups:rekey",
            params=(P_GROUP,),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/epochs": {
        "get": _op(
            "listEpochs",
            "Committed epochs, newest first (key ids, never keys)",
            "groups",
            {"200": _json({"type": "array", "items": _ref("Epoch")}, "epochs")},
            scope="read",
            params=(P_GROUP, P_LIMIT(100)),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/commands": {
        "post": _op(
            "sendCommand",
            "Send a group-encrypted command through the in-sidecar controller",
            "groups",
            {"202": _json({"type": "object"}, "what the controller reports (e.g. message id, epoch)")},
            scope="commands:send",
            params=(P_GROUP,),
            body=_json_body("CommandRequest"),
            errors=(*_E, "Conflict"),
            description="409 when no controller is configured on this sidecar or the group has no committed epoch.",
        ),
    },
    "/v1/groups/{group_id}/readings": {
        "get": _op(
            "listReadings",
            "Relayed readings: metadata, and values decrypted by the sidecar's controller",
            "groups",
            {"200": _json({"type": "array", "items": _ref("Reading")}, "readings by id")},
            scope="readings:read",
            params=(P_GROUP, P_AFTER, P_LIMIT(100)),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/readings/{reading_id}": {
        "get": _op(
            "getReading",
            "One relayed reading (the `msg_id` of a `data.reading` event)",
            "groups",
            {"200": _json(_ref("Reading"), "the reading")},
            scope="readings:read",
            params=(
                P_GROUP,
                _param("reading_id", "path", {"type": "integer", "minimum": 0}, "reading id"),
                _param(
                    "wait",
                    "query",
                    {"type": "number", "minimum": 0, "maximum": 10, "default": 0},
                    "seconds to wait for the controller to decrypt it",
                ),
            ),
            errors=_E,
        ),
    },
    "/v1/bridges": {
        "get": _op(
            "listBridges",
            "MQTT bridges: connection, outbox depth, counters, dead letters",
            "events",
            {"200": _json({"type": "array", "items": _ref("Bridge")}, "one entry per configured bridge")},
            scope="read",
        ),
    },
    "/v1/audit": {
        "get": _op(
            "listAudit",
            "Audit log entries (hash-chained)",
            "audit",
            {"200": _json({"type": "array", "items": _ref("AuditEntry")}, "entries by sequence number")},
            scope="audit:read",
            params=(P_AFTER, P_LIMIT(200)),
            errors=("BadRequest",),
        ),
    },
    "/v1/audit/verify": {
        "get": _op(
            "verifyAudit",
            "Recompute the audit hash chain",
            "audit",
            {"200": _json(_ref("AuditVerify"), "result")},
            scope="audit:read",
        ),
    },
    "/v1/events": {
        "get": _op(
            "streamEvents",
            "Server-sent events of key and membership metadata",
            "events",
            {
                "200": {
                    "description": "text/event-stream; each event has id, event (the kind) and data (JSON metadata)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
            scope="read",
            params=(
                _param(
                    "after",
                    "query",
                    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**62}, {"const": "now"}], "default": 0},
                    "replay events after this id; `now` starts at the newest event (named first in an `id:` field)",
                ),
                _param("group", "query", _ID, "only this group's events"),
                _param(
                    "Last-Event-ID",
                    "header",
                    {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "resume after this event (takes precedence over after)",
                ),
            ),
            errors=("BadRequest", "TooMany"),
            description=(
                "Replays missed events from the store, then streams live ones; `: keepalive` comments every 15 s."
            ),
        ),
    },
    "/v1/enroll": {
        "post": _op(
            "enrollSigned",
            "Self-enrolment: a COSE_Sign1 enrol request signed by the certificate's key",
            "meter",
            {"201": _json(_ref("Meter"), "the meter")},
            body=_RAW_BODY,
            errors=("Forbidden", "Conflict"),
        ),
    },
    "/v1/gateway": {
        "get": _op(
            "gatewayInfo",
            "The coordinator's certificate and the CA",
            "meter",
            {"200": _json(_ref("GatewayInfo"), "trust anchors")},
        ),
    },
    "/v1/crl": {
        "get": _op(
            "getCrl",
            "The local CA's current CRL",
            "meter",
            {"200": _binary("application/pkix-crl", "DER CRL")},
            errors=("NotFound",),
        ),
    },
    "/v1/meters/{meter_id}/groups": {
        "get": _op(
            "meterGroups",
            "The groups a meter belongs to (HTTP meters poll this; CoAP meters observe)",
            "meter",
            {"200": _json(_ref("MeterGroups"), "group ids")},
            params=(P_METER,),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/certs": {
        "get": _op(
            "groupCertificates",
            "Certificates of the group's members",
            "meter",
            {"200": _json({"type": "array", "items": _ref("GroupCertificate")}, "certificates")},
            params=(P_GROUP,),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/rounds": {
        "post": _op(
            "postRound",
            "A member message (Round1, Round2, Confirm)",
            "meter",
            {"204": {"description": "accepted"}, "200": _json(_ref("Duplicate"), "a harmless duplicate")},
            params=(P_GROUP,),
            body=_RAW_BODY,
            errors=("NotFound", "Forbidden", "Conflict", "Unavailable"),
        ),
    },
    "/v1/groups/{group_id}/rejoin": {
        "post": _op(
            "rejoinGroup",
            "A lagging member's signed rejoin request",
            "meter",
            {"200": _json(_ref("RejoinResult"), "taken back")},
            params=(P_GROUP,),
            body=_RAW_BODY,
            errors=("NotFound", "Forbidden"),
        ),
    },
    "/v1/groups/{group_id}/refusal": {
        "post": _op(
            "reportRefusal",
            "A member's signed report of a Start it refused (mode, roster, revocation); kept, never acted on",
            "meter",
            {"200": _json(_ref("RefusalResult"), "recorded")},
            params=(P_GROUP,),
            body=_RAW_BODY,
            errors=("NotFound", "Forbidden"),
        ),
    },
    "/v1/groups/{group_id}/session": {
        "get": _op(
            "sessionMessages",
            "Coordinator messages of the latest session (catch-up)",
            "meter",
            {"200": _binary("application/cbor", "deterministic CBOR array of COSE messages, in order")},
            params=(P_GROUP,),
            errors=_E,
        ),
    },
    "/v1/groups/{group_id}/session/{kind}": {
        "get": _op(
            "sessionMessage",
            "One coordinator message of the latest session",
            "meter",
            {"200": _binary("application/cose", "COSE_Sign1")},
            params=(P_GROUP, P_KIND),
            errors=_E,
        ),
    },
    "/v1/meters/{meter_id}/groups/{group_id}/inbox": {
        "get": _op(
            "inbox",
            "A member's coordinator messages and group data (long poll)",
            "meter",
            {
                "200": _binary(
                    "application/cbor",
                    'CBOR {"cursor": int, "items": [["s", sid, kind, msg|null] | ["d", id, msg|null]]}',
                )
            },
            params=(
                P_METER,
                P_GROUP,
                P_AFTER,
                _param(
                    "wait",
                    "query",
                    {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
                    "seconds to wait for something new when the inbox is empty",
                ),
            ),
            errors=("BadRequest", "Forbidden"),
            description="Refused (403) for revoked, removed and unknown meters.",
        ),
    },
    "/v1/groups/{group_id}/data": {
        "get": _op(
            "groupData",
            "Relayed group data messages",
            "meter",
            {"200": _binary("application/cbor", "CBOR array of [id, sender, COSE_Encrypt0]")},
            params=(P_GROUP, P_AFTER, P_LIMIT(200)),
            errors=_E,
        ),
        "post": _op(
            "postGroupData",
            "Relay a group data message (a reading or a command)",
            "meter",
            {"201": _json(_ref("DataPosted"), "relayed"), "200": _json(_ref("DataPosted"), "already relayed")},
            params=(P_GROUP,),
            body=_RAW_BODY,
            errors=("NotFound", "Conflict"),
        ),
    },
    "/openapi.json": {
        "get": _op("openapi", "This document", "service", {"200": _json({"type": "object"}, "OpenAPI 3.1")}),
    },
    "/healthz": {
        "get": _op(
            "health",
            "Liveness and store check",
            "service",
            {"200": _json(_ref("Health"), "healthy")},
            errors=("Unavailable",),
        ),
    },
    "/metrics": {
        "get": _op(
            "metrics",
            "Prometheus metrics",
            "service",
            {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "GridKey sidecar",
        "version": "1",
        "description": (
            "Contributory group keys for smart meters. Operator endpoints take ES256 bearer JWTs with scopes; "
            "meter endpoints are authenticated by the COSE signatures in their bodies. Errors are RFC 9457 "
            "problem details. Only metadata (epochs, key ids, members) is ever exposed, never a key."
        ),
    },
    "tags": [
        {"name": "meters", "description": "operator: meter certificates"},
        {"name": "groups", "description": "operator: groups, membership, rekeying, commands"},
        {"name": "audit", "description": "operator: the hash-chained audit log"},
        {"name": "events", "description": "operator: server-sent events"},
        {"name": "meter", "description": "meter-facing, COSE-signed, no token"},
        {"name": "service", "description": "health, metrics, this document"},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "ES256 JWT; the space-separated `scope` claim grants: " + ", ".join(SCOPES) + ".",
                "x-scopes": list(SCOPES),
            }
        },
    },
}


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """A copy of the document, optionally with a ``servers`` entry for the URL it is served at."""
    doc = copy.deepcopy(DOCUMENT)
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
