"""Real Mosquitto brokers for the bridge tests and ``gridkey bench bridge``, each set up like one cloud.

A cloud we cannot reach is a real broker set up the way that cloud behaves:

* ``aws``: TLS on its own port with ``require_certificate true`` and ``use_identity_as_username``
  (the client certificate's CN is the username: mutual TLS, as AWS IoT Core), an ACL per ``%u``
  (a thing may publish only under its own topics and its shadow), ``max_qos 1``,
  ``message_size_limit 131072`` (128 KB). Under MQTT 5 a publish the ACL denies gets PUBACK 0x87.
* ``azure``: MQTT 3.1.1 over TLS, the device's username ``{hub}/{device}/?api-version=2021-04-12``
  and a password file holding the SAS token the test minted (a wrong or superseded token is
  refused), an ACL limiting the device to ``devices/{device}/messages/events/#`` and ``$iothub/#``,
  ``max_qos 1``, ``message_size_limit 262144``.
* ``plain``: an open listener (the generic profile's broker).

Config notes (Mosquitto 2.0.11): ``max_qos`` and the other per-listener options must come *after*
their ``listener`` line (``per_listener_settings true``); running as root needs ``user root`` or key
files the ``mosquitto`` user can read. Certificates come from :class:`Pki` (cryptography),
made fresh per test run; nothing is downloaded.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MOSQUITTO = os.environ.get("GRIDKEY_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("GRIDKEY_MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")


def free_port() -> int:
    """A free port *below* the ephemeral range: a bridge reconnecting to a stopped broker's port
    could otherwise be given that very port as its own source port (a TCP self-connect, on Linux),
    or a client's outgoing connection could take it, and the broker could not start again on it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class Pki:
    """A throwaway CA with server and client certificates (EC P-256), written as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridkey test broker CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca = self._write("ca.pem", self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(self, cn: str, *, server: bool = False) -> tuple[Path, Path]:
        """(cert, key) for ``cn``; a server certificate names 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        if server:
            import ipaddress

            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = b.sign(self.ca_key, hashes.SHA256())
        safe = cn.replace("/", "_")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (
            self._write(f"{safe}.cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{safe}.key.pem", key_pem),
        )


@dataclass
class Received:
    topic: str
    payload: bytes
    at: float  # time.monotonic() at the subscriber
    wall: float  # time.time() at the subscriber (to compare with the sidecar's timestamps)
    properties: dict = field(default_factory=dict)


class Broker:
    """A ``mosquitto`` process with its own config, on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path, profile: str, pki: Pki | None = None, **options) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.pki = pki
        self.options = options
        self.port = free_port()
        self.admin_port = free_port()  # an open, local-only listener for the test's own subscriber
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.passwd = workdir / "passwd"
        self.acl = workdir / "acl"
        self.proc: subprocess.Popen | None = None

    # --- configuration --------------------------------------------------------------------------

    def _tls_listener(self) -> list[str]:
        """The client listener with a server certificate from the test PKI (both cloud profiles)."""
        server_cert, server_key = self.pki.issue("broker", server=True)
        return [f"listener {self.port} 127.0.0.1", f"cafile {self.pki.ca}", f"certfile {server_cert}",
                f"keyfile {server_key}"]  # fmt: skip

    def write_config(self) -> None:
        lines = [
            "user root",
            "per_listener_settings true",
            *(
                [
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "max_queued_messages 0",
                    "autosave_interval 1",
                ]
                if self.options.get("persistence")
                else ["persistence false"]
            ),
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # the test's own subscriber: open, but only on loopback and on its own port
            f"listener {self.admin_port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if self.profile == "plain":
            lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_qos 1"]
        elif self.profile == "aws":
            lines += [
                *self._tls_listener(),
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
                f"acl_file {self.acl}",
                "max_qos 1",
                "message_size_limit 131072",
            ]
            thing_topics = self.options.get("allowed", ["gridkey/%u/#", "$aws/things/%u/shadow/#"])
            self.acl.write_text(
                "".join(f"pattern write {t}\n" for t in thing_topics) + "pattern read $aws/things/%u/shadow/#\n"
            )
        elif self.profile == "azure":
            lines += [
                *self._tls_listener(),
                "allow_anonymous false",
                f"password_file {self.passwd}",
                f"acl_file {self.acl}",
                "max_qos 1",
                "message_size_limit 262144",
                "protocol mqtt",
            ]
            user = self.options["username"]
            device = self.options["device"]
            self.acl.write_text(
                f"user {user}\n"
                f"topic write devices/{device}/messages/events/#\n"
                "topic write $iothub/twin/PATCH/properties/reported/#\n"
                "topic read $iothub/twin/res/#\n"
            )
            self.set_password(user, self.options["password"], reload=False)
        else:
            raise ValueError(f"unknown broker profile {self.profile}")
        self.conf.write_text("\n".join(lines) + "\n")

    def set_password(self, username: str, password: str, *, reload: bool = True) -> None:
        """(Re)write the password file with one user; a running broker re-reads it on SIGHUP."""
        self.passwd.write_text("")
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(self.passwd), username, password], check=True, capture_output=True)
        self.passwd.chmod(0o600)
        if reload and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Broker:
        if not os.access(MOSQUITTO, os.X_OK):
            raise AssertionError(f"{MOSQUITTO} not found: run scripts/install-system-deps.sh (Debian mosquitto)")
        if not self.conf.exists():
            self.write_config()
        out = open(self.workdir / "mosquitto.out", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.tail()}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.admin_port), timeout=0.2),
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                ):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen within {timeout} s: {self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        text = ""
        for p in (self.log, self.workdir / "mosquitto.out"):
            if p.exists():
                text += p.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def subscriber(self, *topics: str, session: str | None = None) -> Subscriber:
        """``session``: a client id whose session (and queued QoS 1 messages) outlives reconnects."""
        return Subscriber(self.admin_port, *topics, session=session)


class Subscriber:
    """The cloud side: an MQTT 5 client on the broker's open admin listener recording what it is sent."""

    def __init__(self, port: int, *topics: str, session: str | None = None) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session or "", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.reconnect_delay_set(0.1, 1)
        props = None
        if session:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=not session, properties=props)
        # "#" does not match topics that start with "$" (MQTT 4.7.2): the clouds' own trees by name
        self.client.subscribe([(t, 1) for t in topics or ("#", "$aws/#", "$iothub/#")])
        self.client.loop_start()
        if not self._ready.wait(10):
            raise AssertionError("the test subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        props = {}
        if msg.properties is not None and getattr(msg.properties, "UserProperty", None):
            props = dict(msg.properties.UserProperty)
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), time.monotonic(), time.time(), props))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
