"""Bridge configuration: what each profile accepts, and clear refusals naming the field."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gridkey.bench.mosquitto import Pki
from gridkey.transports.mqtt import sas
from gridkey.transports.mqtt.config import BridgeConfigError, load, load_all
from gridkey.transports.mqtt.profiles import KIND_EVENT, KIND_STATE, KIND_TELEMETRY


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A CA and a client certificate that load (the configuration loads them to check them)."""
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("gateway-7")
    (tmp_path / "ca.pem").write_bytes(pki.ca.read_bytes())
    (tmp_path / "cert.pem").write_bytes(cert.read_bytes())
    (tmp_path / "key.pem").write_bytes(key.read_bytes())
    (tmp_path / "device.key").write_text(base64.b64encode(bytes(range(32))).decode())
    return tmp_path


def write(tmp: Path, text: str) -> Path:
    p = tmp / "bridges.toml"
    p.write_text(text)
    return p


AWS = """
[[bridge]]
name = "aws"
profile = "aws-iot"
host = "abc-ats.iot.eu-west-1.amazonaws.com"
client_id = "gateway-7"
[bridge.tls]
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
"""

AZURE = """
[[bridge]]
name = "azure"
profile = "azure-iot-hub"
host = "myhub.azure-devices.net"
client_id = "gateway-7"
[bridge.auth]
sas_key_file = "device.key"
sas_ttl = 600
"""


def test_profiles_take_their_clouds_defaults(files):
    (aws,) = load(write(files, AWS))
    assert (aws.port, aws.mqtt, aws.qos) == (8883, "5", 1)
    p = aws.make_profile()
    assert p.topic(KIND_STATE) == "$aws/things/gateway-7/shadow/update"
    assert p.topic(KIND_EVENT, event_kind="epoch.committed") == "gridkey/gateway-7/events/epoch.committed"
    assert p.subscriptions() == [
        "$aws/things/gateway-7/shadow/update/accepted",
        "$aws/things/gateway-7/shadow/update/rejected",
    ]
    (az,) = load(write(files, AZURE))
    assert (az.port, az.mqtt, az.hub) == (8883, "3.1.1", "myhub.azure-devices.net")
    assert az.azure_username == "myhub.azure-devices.net/gateway-7/?api-version=2021-04-12"
    assert az.sas_key == bytes(range(32))
    p = az.make_profile()
    assert p.topic(KIND_TELEMETRY, group="feeder-7") == (
        "devices/gateway-7/messages/events/$.ct=application%2Fjson&$.ce=utf-8&kind=telemetry&group=feeder-7"
    )
    assert p.topic(KIND_STATE) == "$iothub/twin/PATCH/properties/reported/?$rid={rid}"
    assert "password" not in repr(az) and "sas_key" not in repr(az)  # credentials never in a repr


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (('client_id = "gateway-7"', 'client_id = "$gw"'), "client_id", "does not start with $"),
        (('client_id = "gateway-7"', 'client_id = "gw 7"'), "client_id", "letters, digits and :_-"),
        (('host = "abc', 'mqtt = "3.1.1"\nhost = "abc'), "mqtt", "use MQTT 5 with aws-iot"),
        (('host = "abc', 'port = 443\nhost = "abc'), "port", "needs ALPN or WebSockets"),
        (('host = "abc', 'events = ["epoch.comitted"]\nhost = "abc'), "events", "unknown event kind 'epoch.comitted'"),
        (('cert = "cert.pem"', 'cert = "ca.pem"'), "tls.cert", "do not load"),
        (('ca = "ca.pem"', 'ca = "key.pem"'), "tls.ca", "not a CA certificate file"),
        (('client_id = "gateway-7"', 'client_id = "' + "x" * 129 + '"'), "client_id", "1 to 128 bytes"),
        (('host = "abc', 'qos = 2\nhost = "abc'), "qos", "QoS 2 is refused"),
        (('cert = "cert.pem"\n', ""), "tls.cert", "cert and key go together"),
        (('[bridge.tls]\nca = "ca.pem"\ncert = "cert.pem"\nkey = "key.pem"\n', ""), "tls", "mutual TLS"),
        (('ca = "ca.pem"', 'ca = "key.pem"'), "tls.ca", "not a CA certificate file"),
        (('ca = "ca.pem"', 'ca = "missing.pem"'), "tls.ca", "is not a readable file"),
        (('host = "abc', 'colour = "red"\nhost = "abc'), "colour", "is not a known field"),
        (('host = "abc', 'port = "8883"\nhost = "abc'), "port", "must be an integer"),
        (('host = "abc', 'telemetry = "plain"\nhost = "abc'), "telemetry", "must be one of envelope, decrypted, off"),
        (
            ('key = "key.pem"\n', 'key = "key.pem"\n[bridge.topics]\nevent = "a/b/c/d/e/f/g/h/{kind}"\n'),
            "topics.event",
            "levels",
        ),
    ],
)
def test_aws_refusals_name_the_field_and_the_reason(files, change, field, reason):
    with pytest.raises(BridgeConfigError) as err:
        load(write(files, AWS.replace(*change)))
    assert err.value.field == field and reason in err.value.reason, str(err.value)
    assert str(err.value).startswith("bridge 'aws': ")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (('host = "myhub', 'mqtt = "5"\nhost = "myhub'), "mqtt", "MQTT 3.1.1"),
        (('sas_key_file = "device.key"\n', ""), "auth", "needs sas_key_file"),
        (("sas_ttl = 600", "sas_ttl = 2"), "auth.sas_ttl", "5 seconds"),
        (("sas_ttl = 600", 'sas_ttl = 600\nusername = "other"'), "auth.username", "{hub}/{device}"),
    ],
)
def test_azure_refusals(files, change, field, reason):
    with pytest.raises(BridgeConfigError) as err:
        load(write(files, AZURE.replace(*change)))
    assert err.value.field == field and reason in err.value.reason, str(err.value)


def test_files_and_names(files, tmp_path):
    with pytest.raises(BridgeConfigError, match="not TOML"):
        load(write(files, "[[bridge]\n"))
    with pytest.raises(BridgeConfigError, match="no \\[\\[bridge\\]\\] table"):
        load(write(files, "\n"))
    with pytest.raises(BridgeConfigError, match="name: is required"):
        load(write(files, '[[bridge]]\nhost = "h"\n'))
    with pytest.raises(BridgeConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")
    a = write(files, '[[bridge]]\nname = "a"\nhost = "h"\n')
    with pytest.raises(BridgeConfigError, match="used by more than one bridge"):
        load_all([a, a])
    (g,) = load(a)
    assert (g.profile, g.port, g.mqtt, g.tls) == ("generic", 1883, "5", None)


def test_sas_tokens_follow_azures_format_and_a_shared_grid():
    key = bytes(range(32))
    expiry, renew = sas.window(1_000_005, 600)
    assert (expiry, renew) == (1_000_800, 1_000_200)  # window 999,600..1,000,200: valid 600..1200 s
    tok = sas.token("myhub.azure-devices.net", "dev-1", key, expiry)
    assert tok.startswith("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1&sig=")
    assert tok.endswith(f"&se={expiry}") and sas.expiry_of(tok) == expiry
    # the signature as Azure's documentation computes it
    import hashlib
    import hmac
    from urllib.parse import quote

    msg = f"{quote('myhub.azure-devices.net/devices/dev-1', safe='')}\n{expiry}".encode()
    sig = quote(base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode(), safe="")
    assert f"&sig={sig}&" in tok
    with pytest.raises(ValueError, match="base64"):
        sas.decode_key("not base64!")
