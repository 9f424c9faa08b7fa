"""What leaves the gateway through a bridge: gateway events made into MQTT messages.

Only metadata ever leaves: :meth:`GatewayEvent.public` (epochs, public key ids, members, reasons,
timings), never a group key, exporter or private key. Telemetry leaves as the encrypted envelope
the gateway relays (COSE_Encrypt0, base64) unless the bridge is configured with
``telemetry = "decrypted"``, where it carries what the sidecar's controller decrypted; that mode
needs ``--controller``, which makes the sidecar process a group member and so a key holder.

Message ids are ``{gateway}-{outbox instance}:{event id}:{n}``: the same event always gives the same
ids, so a consumer deduplicates the repeats at-least-once delivery brings, across crashes too; the
outbox's random instance id keeps two sites (or a restored store) from reusing one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

from ...gateway import GatewayEvent
from .config import BridgeConfig
from .outbox import OutMessage
from .profiles import KIND_EVENT, KIND_STATE, KIND_TELEMETRY, Profile

# (group id, message digest hex, seconds to wait) -> what the sidecar's controller decrypted
ReadingValues = Callable[[str, str, float], dict[str, Any] | None]
DECRYPT_WAIT_S = 1.0
EVENT_FIELDS = {  # per kind, the fields that go out (public metadata only, named explicitly)
    "epoch.committed": ("group_id", "epoch", "key_id", "members", "trigger", "duration_ms"),
    "meter.revoked": ("meter_id", "reason"),
    "meter.enrolled": ("meter_id", "role", "kid"),
    "member.added": ("group_id", "members"),
    "member.removed": ("group_id", "meter_id", "reason"),
    "member.refused": ("group_id", "meter_id", "epoch", "reason", "detail"),
    "session.aborted": ("group_id", "epoch", "reason", "excluded"),
    "session.failed": ("group_id", "epoch", "reason"),
    "group.created": ("group_id", "members", "suite", "mode"),
    "rekey.requested": ("group_id", "trigger", "request_id"),
}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


class Shaper:
    """Turns gateway events into one bridge's messages."""

    def __init__(
        self,
        cfg: BridgeConfig,
        profile: Profile,
        gateway_id: str,
        reading_values: ReadingValues | None,
        id_prefix: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.profile = profile
        self.gateway_id = gateway_id
        self.id_prefix = id_prefix or gateway_id
        self.reading_values = reading_values
        self.events = frozenset(cfg.events)

    def wanted(self, ev: GatewayEvent) -> bool:
        if ev.kind == "data.reading":
            return self.cfg.telemetry != "off"
        return ev.kind in self.events or ev.kind == "epoch.committed"  # the reported state, always

    def messages(self, ev: GatewayEvent) -> list[OutMessage]:
        if not self.wanted(ev):
            return []
        out: list[OutMessage] = []

        def add(kind: str, topic: str, body: dict[str, Any] | bytes, retain: bool = False) -> None:
            msg_id = f"{self.id_prefix}:{ev.id}:{len(out)}"
            payload = body if isinstance(body, bytes) else dumps({"msg_id": msg_id, **body})
            out.append(OutMessage(msg_id, kind, topic, payload, self.cfg.qos, retain))

        if ev.kind == "data.reading":
            add(KIND_TELEMETRY, self.profile.topic(KIND_TELEMETRY, group=ev.group_id or ""), self._reading(ev))
            return out
        if ev.kind in self.events:
            body = self._event_body(ev)
            add(KIND_EVENT, self.profile.topic(KIND_EVENT, group=ev.group_id or "", event_kind=ev.kind), body)
        if ev.kind == "epoch.committed" and ev.group_id:
            state = {
                "keyVersion": ev.body.get("epoch"),
                "keyId": ev.body.get("key_id"),
                "members": len(ev.body.get("members", [])),
                "committedAt": ev.ts,
            }
            msg_id = f"{self.id_prefix}:{ev.id}:{len(out)}"
            topic, payload, retain = self.profile.state_message(ev.group_id, state, msg_id)
            add(KIND_STATE, topic, payload, retain and self.cfg.retain_state)
        return out

    def _event_body(self, ev: GatewayEvent) -> dict[str, Any]:
        public = ev.public()
        fields = EVENT_FIELDS.get(ev.kind, ("group_id", "meter_id", "epoch", "reason"))
        body = {k: public[k] for k in fields if k in public}
        if ev.kind == "epoch.committed":
            body["committed_at"] = ev.ts
        return {"gateway": self.gateway_id, "kind": ev.kind, "event_id": ev.id, "ts": ev.ts, **body}

    def _reading(self, ev: GatewayEvent) -> dict[str, Any]:
        b = ev.body
        body: dict[str, Any] = {
            "gateway": self.gateway_id,
            "kind": "reading",
            "event_id": ev.id,
            "ts": ev.ts,
            "group_id": ev.group_id,
            "sender": b.get("sender"),
            "epoch": b.get("epoch"),
            "key_id": b.get("key_id"),
            "seq": b.get("seq"),
        }
        data = ev.data or b""
        if self.cfg.telemetry == "envelope":
            body["envelope"] = base64.b64encode(data).decode()  # COSE_Encrypt0: readable by group members only
            return body
        got = None
        if self.reading_values is not None and ev.group_id:
            got = self.reading_values(ev.group_id, hashlib.sha256(data).hexdigest(), DECRYPT_WAIT_S)
        body["value_status"] = "decrypted" if got is not None else "not-delivered"
        if got is not None:
            body["value"] = got.get("value")
        return body
