"""Bridge configuration: ``[[bridge]]`` tables in a TOML file, checked field by field at start.

A configuration the bridge could only fail on later (a QoS the cloud refuses, a client id AWS
would reject, a key file that is missing) is refused here, naming the bridge, the field and the
reason, so ``gridkey serve`` does not start with a bridge that cannot work.

    [[bridge]]
    name = "aws"                     # unique; names the outbox queue, metrics and /v1/bridges
    profile = "aws-iot"              # generic | aws-iot | azure-iot-hub
    host = "abc123-ats.iot.eu-west-1.amazonaws.com"
    port = 8883
    client_id = "gateway-7"          # aws-iot: the thing name; azure-iot-hub: the device id
    telemetry = "envelope"           # envelope (ciphertext) | decrypted (needs --controller) | off
    [bridge.tls]
    ca = "AmazonRootCA1.pem"
    cert = "gateway-7.cert.pem"
    key = "gateway-7.private.key"

See docs/bridges.md for every field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import KIND_EVENT, KIND_STATE, KIND_TELEMETRY, PLACEHOLDERS, PROFILES, Profile

TELEMETRY_MODES = ("envelope", "decrypted", "off")
FULL_POLICIES = ("reject-new", "drop-oldest")
MQTT_VERSIONS = ("3.1.1", "5")
# Gateway events a bridge forwards by default: the key lifecycle, never protocol internals.
DEFAULT_EVENTS = ("epoch.committed", "meter.revoked", "member.removed", "member.added", "session.aborted")
# every kind a bridge can forward (messages.EVENT_FIELDS names their fields)
EVENT_KINDS = frozenset(
    {*DEFAULT_EVENTS, "meter.enrolled", "session.failed", "group.created", "rekey.requested", "member.refused"}
)
AZURE_API_VERSION = "2021-04-12"
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
THING_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


class BridgeConfigError(ValueError):
    """A configuration that cannot work: ``bridge``, ``field`` and the ``reason``."""

    def __init__(self, bridge: str, field_: str, reason: str) -> None:
        super().__init__(f"bridge {bridge!r}: {field_}: {reason}")
        self.bridge, self.field, self.reason = bridge, field_, reason


@dataclass(frozen=True)
class Tls:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class OutboxLimits:
    max_messages: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    full: str = "drop-oldest"


@dataclass(frozen=True)
class BridgeConfig:
    name: str
    profile: str
    host: str
    port: int
    client_id: str
    mqtt: str = "3.1.1"
    qos: int = 1
    retain_state: bool = True
    keepalive: int = 60
    telemetry: str = "envelope"
    events: tuple[str, ...] = DEFAULT_EVENTS
    tls: Tls | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    hub: str | None = None  # azure-iot-hub: the hub's host name (the SAS resource and the username)
    sas_key: bytes | None = field(default=None, repr=False)  # azure-iot-hub: the device key (decoded)
    sas_ttl: int = 3600
    topics: dict[str, str] = field(default_factory=dict)
    outbox: OutboxLimits = OutboxLimits()
    max_inflight: int = 100
    reconnect_max_s: float = 60.0  # the longest wait between reconnection attempts (full jitter)

    def make_profile(self) -> Profile:
        return PROFILES[self.profile](self.client_id, self.topics)

    @property
    def azure_username(self) -> str:
        return f"{self.hub}/{self.client_id}/?api-version={AZURE_API_VERSION}"


class _Fields:
    """Reads one table, refusing unknown keys and wrong types with the field's full name."""

    def __init__(self, bridge: str, table: dict[str, Any], prefix: str = "") -> None:
        self.bridge, self.table, self.prefix = bridge, table, prefix
        self.seen: set[str] = set()

    def fail(self, key: str, reason: str) -> BridgeConfigError:
        return BridgeConfigError(self.bridge, self.prefix + key, reason)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"must be {_kind_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self.get(key, (str, int, float), default))
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known field")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "an integer", bool: "true or false", dict: "a table", list: "a list",
                        float: "a number"}[k] for k in kinds)  # fmt: skip


def _file(f: _Fields, key: str, base: Path) -> Path | None:
    value = f.get(key, str)
    if value is None:
        return None
    path = (base / value).expanduser()
    if not path.is_file():
        raise f.fail(key, f"{path} is not a readable file")
    return path


def parse_bridge(table: dict[str, Any], base: Path) -> BridgeConfig:
    """One ``[[bridge]]`` table; relative file names are relative to the configuration file."""
    name = table.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or set(name) - NAME_CHARS:
        raise BridgeConfigError(str(name), "name", "is required: 1 to 64 of A-Z a-z 0-9 - _ .")
    f = _Fields(name, table)
    f.get("name", str)
    profile_name = f.choice("profile", tuple(PROFILES), "generic")
    limits = PROFILES[profile_name].limits
    client_id = f.get("client_id", str, f"gridkey-{name}")
    if not client_id or len(client_id.encode()) > limits.max_client_id:
        raise f.fail("client_id", f"must be 1 to {limits.max_client_id} bytes for {profile_name}")
    if profile_name == "aws-iot" and (client_id.startswith("$") or set(client_id) - THING_NAME_CHARS):
        raise f.fail("client_id", "an AWS IoT thing name is letters, digits and :_- (and does not start with $)")
    if profile_name != "generic" and any(c in client_id for c in "/#+"):
        raise f.fail("client_id", "must not contain / # or +")
    mqtt = f.choice("mqtt", MQTT_VERSIONS, "3.1.1" if profile_name == "azure-iot-hub" else "5")
    if profile_name == "azure-iot-hub" and mqtt != "3.1.1":
        raise f.fail("mqtt", "Azure IoT Hub speaks MQTT 3.1.1 on port 8883 (MQTT 5 is a different endpoint)")
    if profile_name == "aws-iot" and mqtt != "5":
        # 3.1.1 has no way to refuse one publish: AWS closes the connection instead, and the
        # bridge could not tell a refused message from a broken link
        raise f.fail("mqtt", "use MQTT 5 with aws-iot: its PUBACK reason codes say which message was refused")
    qos = f.get("qos", int, 1)
    if qos not in (0, 1) or qos > limits.max_qos:
        raise f.fail("qos", f"must be 0 or 1 (QoS 2 is refused by {profile_name}; the message id deduplicates)")
    port = f.get("port", int, 8883 if profile_name != "generic" or "tls" in table else 1883)
    if not 1 <= port <= 65535:
        raise f.fail("port", "must be 1 to 65535")
    if port == 443 and profile_name != "generic":
        raise f.fail(
            "port", f"{profile_name} on 443 needs ALPN or WebSockets, which this bridge does not speak; use 8883"
        )
    host = f.get("host", str, required=True)
    keepalive = f.get("keepalive", int, 60)
    if not 5 <= keepalive <= 1200:  # AWS IoT Core: 30-1200 s; brokers commonly accept less
        raise f.fail("keepalive", "must be 5 to 1200 seconds")
    telemetry = f.choice("telemetry", TELEMETRY_MODES, "envelope")
    events = f.get("events", list, list(DEFAULT_EVENTS))
    unknown = [e for e in events if not isinstance(e, str) or e not in EVENT_KINDS]
    if unknown:
        raise f.fail("events", f"unknown event kind {unknown[0]!r} (known: {', '.join(sorted(EVENT_KINDS))})")
    max_inflight = f.get("max_inflight", int, 100)
    if not 1 <= max_inflight <= 65535:
        raise f.fail("max_inflight", "must be 1 to 65535")
    reconnect_max_s = f.get("reconnect_max_s", (int, float), 60)
    if not 1 <= reconnect_max_s <= 3600:
        raise f.fail("reconnect_max_s", "must be 1 to 3600 seconds")

    tls = None
    if "tls" in table:
        t = _Fields(name, f.get("tls", dict), "tls.")
        tls = Tls(ca=_file(t, "ca", base), cert=_file(t, "cert", base), key=_file(t, "key", base))
        t.done()
        if (tls.cert is None) != (tls.key is None):
            raise BridgeConfigError(name, "tls.key" if tls.key is None else "tls.cert", "cert and key go together")
    f.seen.add("tls")

    username = password = hub = None
    sas_key = None
    sas_ttl = 3600
    if "auth" in table:
        a = _Fields(name, f.get("auth", dict), "auth.")
        username = a.get("username", str)
        password = a.get("password", str)
        password_file = _file(a, "password_file", base)
        if password_file is not None:
            if password is not None:
                raise a.fail("password_file", "give password or password_file, not both")
            password = password_file.read_text().strip()
        hub = a.get("hub", str)
        key_file = _file(a, "sas_key_file", base)
        if key_file is not None:
            from .sas import decode_key

            try:
                sas_key = decode_key(key_file.read_text())
            except ValueError as exc:
                raise a.fail("sas_key_file", str(exc)) from None
        sas_ttl = a.get("sas_ttl", int, 3600)
        if not 5 <= sas_ttl <= 365 * 86400:  # short windows are for tests; an hour or a day is usual
            raise a.fail("sas_ttl", "must be 5 seconds to 365 days")
        a.done()
    f.seen.add("auth")

    topics: dict[str, str] = {}
    if "topics" in table:
        t = _Fields(name, f.get("topics", dict), "topics.")
        for kind in (KIND_EVENT, KIND_TELEMETRY, KIND_STATE):
            value = t.get(kind, str)
            if value is not None:
                try:
                    value.format_map({k: "x" for k in PLACEHOLDERS})
                except (KeyError, ValueError, IndexError) as exc:
                    raise t.fail(kind, f"unknown placeholder {exc} (known: {', '.join(PLACEHOLDERS)})") from None
                topics[f"{kind}_topic"] = value
        t.done()
    f.seen.add("topics")

    outbox = OutboxLimits()
    if "outbox" in table:
        o = _Fields(name, f.get("outbox", dict), "outbox.")
        outbox = OutboxLimits(
            max_messages=o.get("max_messages", int, outbox.max_messages),
            max_bytes=o.get("max_bytes", int, outbox.max_bytes),
            full=o.choice("full", FULL_POLICIES, outbox.full),
        )
        o.done()
        if outbox.max_messages < 1 or outbox.max_bytes < 1024:
            raise BridgeConfigError(name, "outbox", "max_messages must be >= 1 and max_bytes >= 1024")
    f.seen.add("outbox")
    retain_state = f.get("retain_state", bool, True)
    allow_plaintext_auth = f.get("allow_plaintext_auth", bool, False)
    f.done()

    # what each profile needs to authenticate
    if profile_name == "aws-iot":
        if tls is None or tls.cert is None:
            why = "aws-iot authenticates with mutual TLS: cert and key are required (ca: the system store if unset)"
            raise BridgeConfigError(name, "tls", why)
        if username or password:
            raise BridgeConfigError(name, "auth", "aws-iot takes no username or password (mutual TLS on 8883)")
    if profile_name == "azure-iot-hub":
        hub = hub or host
        if sas_key is None and (tls is None or tls.cert is None) and not password:
            why = "azure-iot-hub needs sas_key_file (the bridge mints and renews SAS tokens) or an X.509 tls.cert"
            raise BridgeConfigError(name, "auth", why)
        if username and not username.startswith(f"{hub}/{client_id}/?api-version="):
            raise BridgeConfigError(name, "auth.username", "Azure's username is {hub}/{device}/?api-version=...")
    elif hub or sas_key:
        raise BridgeConfigError(name, "auth", "hub and sas_key_file belong to azure-iot-hub")
    if password and not username and profile_name == "generic":
        raise BridgeConfigError(name, "auth.username", "a password needs a username")
    if password and tls is None and profile_name == "generic" and not allow_plaintext_auth:
        why = (
            "a password over plain TCP can be read on the wire: configure [bridge.tls], or allow_plaintext_auth = true"
        )
        raise BridgeConfigError(name, "auth.password", why)
    if tls is not None:
        _check_tls(name, tls)

    cfg = BridgeConfig(
        name=name,
        profile=profile_name,
        host=host,
        port=port,
        client_id=client_id,
        mqtt=mqtt,
        qos=qos,
        retain_state=retain_state,
        keepalive=keepalive,
        telemetry=telemetry,
        events=tuple(events),
        tls=tls,
        username=username,
        password=password,
        hub=hub,
        sas_key=sas_key,
        sas_ttl=sas_ttl,
        topics=topics,
        outbox=outbox,
        max_inflight=max_inflight,
        reconnect_max_s=float(reconnect_max_s),
    )
    prof = cfg.make_profile()
    for kind in (KIND_EVENT, KIND_TELEMETRY, KIND_STATE):
        sample = prof.topic(kind, group="g", event_kind="epoch.committed").replace("{rid}", "1")
        why = prof.check_topic(sample)
        if why:
            raise BridgeConfigError(name, f"topics.{kind}", why)
    return cfg


def _check_tls(name: str, tls: Tls) -> None:
    """Load the CA and the client certificate now, so a wrong file is refused at start, not at connect."""
    import ssl

    ctx = ssl.create_default_context()
    if tls.ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca))
        except ssl.SSLError as exc:
            raise BridgeConfigError(name, "tls.ca", f"not a CA certificate file: {exc.reason or exc}") from None
    if tls.cert is not None:
        try:
            # no password: an encrypted key would make OpenSSL prompt on a terminal at every connect
            ctx.load_cert_chain(str(tls.cert), str(tls.key), password=lambda: b"")
        except ssl.SSLError as exc:
            why = f"cert and key do not load (an encrypted key is not supported): {exc.reason or exc}"
            raise BridgeConfigError(name, "tls.cert", why) from None


def load(path: Path) -> list[BridgeConfig]:
    """Every ``[[bridge]]`` of a TOML file; raises :class:`BridgeConfigError` (or ValueError for TOML)."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise BridgeConfigError("-", str(path), f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BridgeConfigError("-", str(path), f"not TOML: {exc}") from None
    unknown = sorted(set(doc) - {"bridge"})
    if unknown:
        raise BridgeConfigError("-", unknown[0], "is not a known table (bridges are [[bridge]] tables)")
    tables = doc.get("bridge", [])
    if not isinstance(tables, list) or not tables:
        raise BridgeConfigError("-", "bridge", f"{path} has no [[bridge]] table")
    return [parse_bridge(t, Path(path).parent) for t in tables]


def load_all(paths: list[Path]) -> list[BridgeConfig]:
    configs = [c for p in paths for c in load(p)]
    names = [c.name for c in configs]
    for n in names:
        if names.count(n) > 1:
            raise BridgeConfigError(n, "name", "is used by more than one bridge")
    return configs
