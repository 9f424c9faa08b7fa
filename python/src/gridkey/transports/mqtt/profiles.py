"""What each cloud accepts, and where a bridge publishes on it: one class per profile.

The limits are each cloud's documented quotas (AWS IoT Core: "AWS IoT Core endpoints and quotas";
Azure IoT Hub: "Communicate with an IoT hub using the MQTT protocol"), enforced here so that a
message the cloud would refuse or disconnect for never leaves the outbox: it is dead-lettered with
the reason instead. Topic templates take ``{gateway}`` (the bridge's client identity: thing name,
device id, or the gateway id), ``{group}`` and ``{kind}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

# What each kind of outgoing message is (a fact the outbox, the metrics and the docs share).
KIND_EVENT = "event"  # key-lifecycle metadata: epochs, revocations, aborts
KIND_TELEMETRY = "telemetry"  # a reading: its encrypted envelope, or the controller's decrypted value
KIND_STATE = "state"  # reported state: shadow / twin / a retained state topic
KIND_PROBE = "probe"  # `gridkey bridge check`
KINDS = (KIND_EVENT, KIND_TELEMETRY, KIND_STATE, KIND_PROBE)


@dataclass(frozen=True)
class Limits:
    max_qos: int
    max_payload: int  # bytes
    max_topic: int  # bytes
    max_topic_levels: int | None  # slashes + 1, None: no limit
    max_rate: float | None  # publishes per second per connection
    max_client_id: int
    max_subscriptions: int | None


class Profile:
    """The generic profile: any MQTT broker, topics as configured."""

    name: ClassVar[str] = "generic"
    limits: ClassVar[Limits] = Limits(
        max_qos=1,  # QoS 2 buys nothing over an idempotent, deduplicable message id
        max_payload=256 * 1024 * 1024,
        max_topic=65535,
        max_topic_levels=None,
        max_rate=None,
        max_client_id=65535,
        max_subscriptions=None,
    )
    defaults: ClassVar[dict[str, str]] = {
        "event_topic": "gridkey/{gateway}/events/{kind}",
        "telemetry_topic": "gridkey/{gateway}/telemetry/{group}",
        "state_topic": "gridkey/{gateway}/state/{group}",
    }

    def __init__(self, identity: str, topics: dict[str, str]) -> None:
        self.identity = identity
        self.topics = {**self.defaults, **topics}

    # --- where messages go ----------------------------------------------------------------------

    def topic(self, kind: str, *, group: str = "", event_kind: str = "") -> str:
        """The topic for a message; ``{rid}`` is left for the publisher (Azure twin request ids)."""
        template = self.topics[f"{kind}_topic"] if kind != KIND_PROBE else self.topics["event_topic"]
        return fill(template, gateway=self.identity, group=group, kind=event_kind or kind)

    def state_message(self, group: str, state: dict[str, Any], msg_id: str) -> tuple[str, bytes, bool]:
        """(topic, payload, retain) that reports one group's key state; a retained topic per group."""
        return self.topic(KIND_STATE, group=group), _json({"msg_id": msg_id, "group_id": group, **state}), True

    def subscriptions(self) -> list[str]:
        """Topics to subscribe to for the cloud's answers (shadow accepted/rejected, twin responses)."""
        return []

    # --- what the cloud would refuse ------------------------------------------------------------

    def check_topic(self, topic: str) -> str | None:
        """Why ``topic`` cannot be published to, or None."""
        raw = topic.encode()
        if not topic or len(raw) > self.limits.max_topic:
            return f"topic is {len(raw)} bytes; {self.name} allows 1 to {self.limits.max_topic}"
        if any(c in topic for c in "+#\0"):
            return "topic contains a wildcard or NUL"
        if self.limits.max_topic_levels is not None and topic.count("/") + 1 > self.limits.max_topic_levels:
            return f"topic has {topic.count('/') + 1} levels; {self.name} allows {self.limits.max_topic_levels}"
        return None

    def check_payload(self, payload: bytes, topic: str = "") -> str | None:
        if len(payload) > self.limits.max_payload:
            return f"payload is {len(payload)} bytes; {self.name} allows {self.limits.max_payload}"
        return None


class AwsIotProfile(Profile):
    """AWS IoT Core: the client id is the thing name; classic shadow for reported state."""

    name = "aws-iot"
    limits = Limits(
        max_qos=1,  # AWS IoT Core has no QoS 2
        max_payload=128 * 1024,
        max_topic=256,
        # "Maximum number of slashes in topic or topic filter: 7" (the $aws/ reserved prefix aside)
        max_topic_levels=8,
        max_rate=100.0,  # "Publish requests per second per connection: 100"
        max_client_id=128,
        max_subscriptions=50,
    )
    defaults: ClassVar[dict[str, str]] = {
        "event_topic": "gridkey/{gateway}/events/{kind}",
        "telemetry_topic": "gridkey/{gateway}/telemetry/{group}",
        "state_topic": "$aws/things/{gateway}/shadow/update",
    }

    def state_message(self, group: str, state: dict[str, Any], msg_id: str) -> tuple[str, bytes, bool]:
        # the classic shadow merges reported state; clientToken comes back in /accepted or /rejected
        reported = {"gridkey": {"groups": {group: state}, "msgId": msg_id}}
        doc = {"state": {"reported": reported}, "clientToken": msg_id[-64:]}
        return self.topic(KIND_STATE), _json(doc), False

    def subscriptions(self) -> list[str]:
        base = self.topic(KIND_STATE)
        return [f"{base}/accepted", f"{base}/rejected"]

    def check_topic(self, topic: str) -> str | None:
        why = super().check_topic(topic)
        if why is None and topic.startswith("$") and not topic.startswith(f"$aws/things/{self.identity}/shadow/"):
            return "topics starting with $ are reserved by AWS IoT Core"
        return why


class AzureIotHubProfile(Profile):
    """Azure IoT Hub: the client id is the device id; device-to-cloud messages and twin reported properties."""

    name = "azure-iot-hub"
    limits = Limits(
        max_qos=1,  # "IoT Hub doesn't support QoS 2 messages": it closes the connection
        max_payload=256 * 1024,
        max_topic=65535,
        max_topic_levels=None,
        max_rate=None,  # hub-wide throttles, not per connection
        max_client_id=128,
        max_subscriptions=5,  # twin responses and desired properties, C2D, methods: few needed
    )
    defaults: ClassVar[dict[str, str]] = {
        "event_topic": "devices/{gateway}/messages/events/",
        "telemetry_topic": "devices/{gateway}/messages/events/",
        "state_topic": "$iothub/twin/PATCH/properties/reported/?$rid={rid}",
    }

    def topic(self, kind: str, *, group: str = "", event_kind: str = "") -> str:
        base = super().topic(kind, group=group, event_kind=event_kind)
        if kind == KIND_STATE:
            return base
        # D2C messages carry their application properties in the topic, url-encoded; $.ct/$.ce let
        # hub routing read the JSON body
        props = {"$.ct": "application/json", "$.ce": "utf-8", "kind": event_kind or kind}
        if group:
            props["group"] = group
        # system property names stay as they are ($.ct), values are url-encoded (application%2Fjson)
        return base + "&".join(f"{k}={quote(v, safe='')}" for k, v in props.items())

    def check_payload(self, payload: bytes, topic: str = "") -> str | None:
        # IoT Hub's 256 KB counts the properties in the topic too
        if len(payload) + len(topic.encode()) > self.limits.max_payload:
            return (
                f"message is {len(payload) + len(topic.encode())} bytes with its properties; {self.name} allows 262144"
            )
        return None

    def state_message(self, group: str, state: dict[str, Any], msg_id: str) -> tuple[str, bytes, bool]:
        # a twin PATCH merges into the reported properties; its request id ($rid) names the message
        return self.topic(KIND_STATE), _json({"gridkey": {"groups": {group: state}, "msgId": msg_id}}), False

    def subscriptions(self) -> list[str]:
        return ["$iothub/twin/res/#"]

    def check_topic(self, topic: str) -> str | None:
        why = super().check_topic(topic)
        d2c = f"devices/{self.identity}/messages/events/"
        if why is None and not (topic.startswith(d2c) or topic.startswith("$iothub/twin/")):
            return "Azure IoT Hub accepts device-to-cloud messages only on devices/{device}/messages/events/"
        return why


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **values: str) -> str:
    """``str.format`` that leaves placeholders it has no value for (e.g. ``{rid}``) as they are."""
    return template.format_map(_Keep(values))


PLACEHOLDERS = ("gateway", "group", "kind", "rid")

PROFILES: dict[str, type[Profile]] = {p.name: p for p in (Profile, AwsIotProfile, AzureIotHubProfile)}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
