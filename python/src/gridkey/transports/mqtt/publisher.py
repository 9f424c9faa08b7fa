"""Draining one bridge's outbox to its broker with paho-mqtt 2.x (callback API v2).

One thread per bridge drives its own paho client (``loop()`` called here, so every callback runs
on this thread and the in-flight table needs no lock). Each connection is a fresh client with a
clean session: the outbox is the only queue, so a broker's ``sessionPresent = 0`` (normal on AWS
and Azure) loses nothing, and paho's own in-memory queue is never relied on.

* A message leaves the outbox only on a *successful* PUBACK. paho calls ``on_publish`` for an
  MQTT 5 failure reason code too (0x87 not authorized, 0x95 packet too large, ...): those go to
  the dead letters with the reason, counted.
* A message the profile forbids (payload or topic too large, a reserved topic) is dead-lettered
  before it is sent.
* After a disconnect everything unacknowledged is sent again, oldest first, under the same
  message id (at least once); reconnects back off exponentially with full jitter.
* ``aws-iot`` never sends more than 100 publishes in any one-second window of a connection: sends
  are spaced evenly, 100 per 1.1 s (a 10 % margin for clock and network jitter; see :class:`Pacer`).
* The broker's CONNACK limits apply: Receive Maximum bounds the in-flight window, Maximum Packet
  Size the payload (paho 2.2 reads neither itself).
* A failure reason code that names the message (0x87 not authorized, 0x90 topic name invalid, 0x95
  packet too large, 0x99 payload format invalid) dead-letters it; any other (0x97 quota exceeded,
  0x80 unspecified, ...) says "not now": the connection is dropped and the message goes again
  after the backoff. A message the broker keeps disconnecting on (MQTT 3.1.1 cannot refuse a
  publish: AWS and Azure close the connection instead) is dead-lettered after MAX_ATTEMPTS sends.
* ``azure-iot-hub`` mints its SAS token from the device key (``sas.window``: valid ttl..2*ttl) and
  reconnects with a fresh one at the window edge, ``ttl`` seconds before the old one expires.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import sas
from .config import BridgeConfig
from .outbox import Outbox, Queued
from .profiles import Profile, fill

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
BACKOFF_MIN_S = 0.5
RATE_MARGIN = 1.1  # a 100/s limit is kept as 100 per 1.1 s
PERMANENT = frozenset({0x87, 0x90, 0x95, 0x99})  # reason codes that say the message itself is refused
MAX_ATTEMPTS = 10  # sends of one message on connections that dropped before it was acknowledged
ACK_BATCH = 64  # acknowledgements removed from the outbox in one transaction
ACK_DELAY_S = 0.05  # ... or after this long, whichever comes first


@dataclass
class BridgeStatus:
    """What /v1/bridges and the metrics show of one bridge (never a credential)."""

    name: str
    profile: str
    broker: str
    connected: bool = False
    connected_since: int | None = None
    reconnects: int = 0
    last_error: str | None = None
    last_connack: str | None = None
    publish_failures: int = 0
    cloud_accepted: int = 0  # shadow update/accepted, twin res 2xx
    cloud_rejected: int = 0  # shadow update/rejected, twin res >= 400
    last_cloud_answer: str | None = None
    token_expires_at: int | None = None  # azure SAS (unix s)
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))


class Pacer:
    """At most ``limit`` sends in any ``window_s`` seconds, spread evenly: one per ``window_s / limit``.

    Even spacing rather than a token bucket (which lets a full bucket go at once and then refill, so
    a receiver's one-second window can see up to twice the limit) or a sliding log (bursts of the
    whole limit at each window edge, which network jitter can push into one receiver-side second).
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.interval = window_s / limit
        self.next_at = 0.0

    def wait(self, now: float) -> float:
        return max(0.0, self.next_at - now)

    def mark(self, now: float) -> None:
        self.next_at = max(now, self.next_at) + self.interval


class Publisher:
    def __init__(
        self,
        cfg: BridgeConfig,
        profile: Profile,
        outbox: Outbox,
        *,
        on_latency=None,
        clock=time.time,
    ) -> None:
        self.cfg = cfg
        self.profile = profile
        self.outbox = outbox
        self.status = BridgeStatus(cfg.name, cfg.profile, f"{cfg.host}:{cfg.port}")
        self.on_latency = on_latency or (lambda seconds: None)
        self.clock = clock
        self.wake = threading.Event()  # new messages in the outbox
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gridkey-bridge-{cfg.name}", daemon=True)
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout)

    # --- connections ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
                self._failures = 0 if self.status.last_error is None else self._failures + 1
            except Exception as exc:  # a broken connection must not end the bridge
                self._failures += 1
                self.status.last_error = _describe(exc)
                log.warning("bridge %s: %s", self.cfg.name, self.status.last_error)
            finally:
                if self.status.connected:
                    self.status.connected = False
                    self.status.connected_since = None
            if self._stop.is_set():
                break
            delay = random.uniform(0, min(self.cfg.reconnect_max_s, BACKOFF_MIN_S * 2 ** min(self._failures, 16)))
            self._stop.wait(delay if self._failures else 0.1)

    def _client(self) -> tuple[mqtt.Client, int | None]:
        v5 = self.cfg.mqtt == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.max_inflight_messages_set(self.cfg.max_inflight)
        client.max_queued_messages_set(0)  # paho never holds more than our in-flight window: the outbox is the queue
        tls = self.cfg.tls
        if tls is not None or self.cfg.profile != "generic":
            ctx = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
            if tls and tls.cert:
                ctx.load_cert_chain(str(tls.cert), str(tls.key), password=lambda: b"")
            client.tls_set_context(ctx)
        renew_at = None
        if self.cfg.profile == "azure-iot-hub":
            password = self.cfg.password
            if self.cfg.sas_key is not None:
                expiry, renew_at = sas.window(self.clock(), self.cfg.sas_ttl)
                password = sas.token(self.cfg.hub or self.cfg.host, self.cfg.client_id, self.cfg.sas_key, expiry)
                self.status.token_expires_at = expiry
            elif password:
                expiry = sas.expiry_of(password)
                self.status.token_expires_at = expiry
            client.username_pw_set(self.cfg.azure_username, password)
        elif self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        return client, renew_at

    def _session(self) -> None:
        client, renew_at = self._client()
        state = {"connack": None, "down": None, "acks": [], "failed": []}
        inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)

        def on_connect(c, userdata, flags, reason_code, properties):
            state["connack"] = reason_code
            state["receive_max"] = getattr(properties, "ReceiveMaximum", None) if properties else None
            state["max_packet"] = getattr(properties, "MaximumPacketSize", None) if properties else None

        def on_disconnect(c, userdata, flags, reason_code, properties):
            state["down"] = reason_code

        def on_publish(c, userdata, mid, reason_code, properties):
            entry = inflight.pop(mid, None)
            if entry is None:
                return
            seq, sent = entry
            if reason_code.is_failure and reason_code.value in PERMANENT:
                state["failed"].append((seq, f"broker refused: {reason_code} (0x{reason_code.value:02x})"))
            elif reason_code.is_failure:  # "not now": keep it, reconnect later
                state["transient"] = f"broker deferred message {seq}: {reason_code} (0x{reason_code.value:02x})"
            else:
                state["acks"].append(seq)
                self.on_latency(time.monotonic() - sent)

        def on_message(c, userdata, msg):
            self._cloud_answer(msg.topic, msg.payload)

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_publish, client.on_message = on_publish, on_message
        try:
            if self.cfg.mqtt == "5":
                client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive, clean_start=True)
            else:
                client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while state["connack"] is None and state["down"] is None:
                if time.monotonic() > deadline or self._stop.is_set():
                    raise TimeoutError("no CONNACK from the broker")
                client.loop(0.1)
            rc = state["connack"]
            if rc is None or rc.is_failure:
                raise ConnectionRefusedError(f"the broker refused the connection: {rc or state['down']}")
            self.status.last_connack = str(rc)
            self._failures = 0  # a connection was made: the next outage backs off from the start
            self.status.connected = True
            self.status.connected_since = int(self.clock())
            self.status.reconnects += 1
            self.status.last_error = None
            for topic in self.profile.subscriptions():
                client.subscribe(topic, qos=min(1, self.cfg.qos))
            self._pump(client, state, inflight, renew_at)
        finally:
            with contextlib.suppress(Exception):  # already gone
                client.disconnect()
                client.loop(0.1)
            if state["down"] is not None and not self._stop.is_set() and self.status.last_error is None:
                self.status.last_error = f"disconnected: {state['down']}"

    def _pump(self, client: mqtt.Client, state: dict, inflight: dict, renew_at: float | None) -> None:
        limits = self.profile.limits
        pacer = Pacer(int(limits.max_rate), RATE_MARGIN) if limits.max_rate else None
        window = min(self.cfg.max_inflight, state.get("receive_max") or 65535)
        max_packet = state.get("max_packet")
        last_sent = 0
        settled = time.monotonic()
        batch: list[Queued] = []
        while not self._stop.is_set() and state["down"] is None:
            if renew_at is not None and self.clock() >= renew_at:
                log.info("bridge %s: renewing its SAS token", self.cfg.name)
                return  # a new connection, with a new token
            if state.get("transient"):
                raise ConnectionError(state["transient"])
            room = window - len(inflight)
            if not batch and room > 0:
                batch = self.outbox.pending(self.cfg.name, after_seq=last_sent, limit=min(room, 500))
            sent_any = False
            held = 0.0
            sent: list[int] = []
            while batch and len(inflight) < window and state["down"] is None:
                if pacer is not None:
                    held = pacer.wait(time.monotonic())
                    if held > 0:
                        break
                q = batch.pop(0)
                last_sent = q.seq
                why = self.profile.check_payload(q.payload, q.topic) or self.profile.check_topic(q.topic)
                if why is None and max_packet and len(q.payload) + len(q.topic) + 64 > max_packet:
                    why = f"the broker's Maximum Packet Size is {max_packet} bytes"
                if why is None and q.attempts >= MAX_ATTEMPTS:
                    why = f"sent {q.attempts} times on connections that dropped before the broker acknowledged it"
                if why:
                    state["failed"].append((q.seq, f"refused before sending: {why}"))
                    continue
                info = client.publish(fill(q.topic, rid=str(q.seq)), q.payload, qos=q.qos, retain=q.retain,
                                      properties=self._properties(q))  # fmt: skip
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
                if pacer is not None:
                    pacer.mark(time.monotonic())
                # QoS 0 too: paho calls on_publish once the packet is written, which is all QoS 0
                # can promise; until then a dropped connection loses it from paho's buffer
                inflight[info.mid] = (q.seq, time.monotonic())
                sent.append(q.seq)
                sent_any = True
            self.outbox.attempted(sent)
            if sent_any:
                client.loop(0.0)
            elif batch or inflight:
                client.loop(min(0.05, held) if held else 0.01)  # waiting on the pacer or on PUBACKs
            else:
                client.loop(0.0)
            # one outbox transaction per batch of acknowledgements, not per PUBACK
            if len(state["acks"]) >= ACK_BATCH or state["failed"] or time.monotonic() - settled >= ACK_DELAY_S:
                self._settle(state)
                settled = time.monotonic()
            if not sent_any and not batch and not inflight:
                self.wake.wait(0.2)
                self.wake.clear()
        self._settle(state)

    def _settle(self, state: dict) -> None:
        if state["acks"]:
            self.outbox.ack(self.cfg.name, state["acks"])
            state["acks"] = []
        for seq, reason in state["failed"]:
            self.status.publish_failures += 1
            log.warning("bridge %s: message %d dead-lettered: %s", self.cfg.name, seq, reason)
            self.outbox.dead_letter(self.cfg.name, seq, reason)
        state["failed"] = []

    def _properties(self, q: Queued) -> Properties | None:
        if self.cfg.mqtt != "5":
            return None
        props = Properties(PacketTypes.PUBLISH)
        # msg_id: the stable id (deduplicate on it); seq: the bridge's queue order (check order on it)
        props.UserProperty = [("msg_id", q.msg_id), ("seq", str(q.seq))]
        props.ContentType = "application/json"
        return props

    def _cloud_answer(self, topic: str, payload: bytes) -> None:
        """Shadow /update/accepted|rejected, twin $iothub/twin/res/{status}/?$rid=...: counted, kept."""
        ok: bool | None = None
        if topic.endswith("/update/accepted"):
            ok = True
        elif topic.endswith("/update/rejected"):
            ok = False
        elif topic.startswith("$iothub/twin/res/"):
            status = topic[len("$iothub/twin/res/") :].split("/", 1)[0]
            ok = status.isdigit() and int(status) < 400
            rid = parse_qs(topic.partition("?")[2]).get("$rid", ["?"])[0]
            topic = f"twin {status} for $rid={rid}"
        if ok is None:
            return
        if ok:
            self.status.cloud_accepted += 1
        else:
            self.status.cloud_rejected += 1
            log.warning("bridge %s: the cloud rejected reported state: %s %s", self.cfg.name, topic, payload[:200])
        self.status.last_cloud_answer = topic


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
