"""The REST transport against a real gateway (SQLite in tmp_path) and, where it matters, real sockets.

Covers every route's happy path, problem+json on every error path, bearer auth, server-sent events
(live and resumed), long polls, a full key negotiation driven by meters over HTTP, and a
schemathesis run from the served OpenAPI document that must cause no 5xx and change nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from gridkey.crypto.identity import cert_to_pem, read_crl
from gridkey.crypto.signatures import SigningKey, verify_key_from_cryptography
from gridkey.crypto.suite import get_suite
from gridkey.datadir import DataDir
from gridkey.gateway import Gateway, Invalid
from gridkey.gateway.batcher import Batcher
from gridkey.gateway.trust import ms_to_dt
from gridkey.meter.delivered import DeliveredReadings
from gridkey.protocol.directory import KeyDirectory
from gridkey.protocol.events import KeyEstablished, Send
from gridkey.protocol.groupdata import ContentType, GroupChannel
from gridkey.protocol.member import GroupMember, MemberIdentity
from gridkey.protocol.requests import MeterRequest
from gridkey.store import Store
from gridkey.store import schema as t
from gridkey.transports.rest import SCOPES, create_app, issue_token, openapi_document, run_in_thread
from gridkey.transports.rest.auth import TokenVerifier

PROBLEM = "application/problem+json"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class World:
    """A real gateway over SQLite, its REST app, and helpers to mint tokens and meters."""

    dd: DataDir
    store: Store
    gw: Gateway
    batcher: Batcher
    app: object
    sent_commands: list = field(default_factory=list)
    keys: dict[str, SigningKey] = field(default_factory=dict)
    certs: dict[str, x509.Certificate] = field(default_factory=dict)

    def token(self, *scopes: str, subject: str = "ops", **kw) -> str:
        return issue_token(
            self.dd.token_key().to_pem(), subject=subject, scopes=list(scopes or SCOPES), ttl_s=600, **kw
        )

    def auth(self, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*scopes)}"}

    def meter(self, meter_id: str, *, suite: str = "GK1", enroll: bool = True) -> SigningKey:
        key, cert = self.dd.issue_identity(meter_id, "meter", suite)
        self.keys[meter_id], self.certs[meter_id] = key, cert
        if enroll:
            self.gw.enroll(cert_to_pem(cert), actor="test")
        return key


def make_world(tmp_path: Path, **app_kw) -> World:
    app_kw.setdefault("heartbeat_s", 0.5)
    dd = DataDir(tmp_path / "data")
    dd.init()
    store = Store(dd.db_url)
    store.migrate()
    gw = Gateway(store, dd.trust())
    batcher = Batcher(gw)
    w = World(dd, store, gw, batcher, None)

    def sender(group_id: str, payload: bytes) -> dict:
        if group_id == "no-epoch":
            raise Invalid("nothing to seal with")
        w.sent_commands.append((group_id, payload))
        return {"group_id": group_id, "size": len(payload), "epoch": 1}

    verifier = TokenVerifier(public_key=dd.token_key().public_key)
    app_kw.setdefault("command_sender", sender)
    w.app = create_app(gw, verifier=verifier, batcher=batcher, **app_kw)
    return w


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.batcher.close()
    w.store.dispose()


@pytest.fixture
def client(world):
    return world.app.test_client()


@pytest.fixture
def live(world):
    handle = run_in_thread(world.app, "127.0.0.1", 0, threads=16)
    yield handle
    handle.close()


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True) if hasattr(resp, "get_data") else resp.text
    ctype = resp.headers["content-type"]
    assert ctype.startswith(PROBLEM), ctype
    body = json.loads(resp.get_data() if hasattr(resp, "get_data") else resp.content)
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status and isinstance(body["detail"], str) and body["title"]
    return body


# --- the contract ---------------------------------------------------------------------------


def test_openapi_document_matches_the_url_map(world, client):
    doc = client.get("/openapi.json").get_json()
    assert doc == openapi_document()
    assert doc["openapi"].startswith("3.1")
    ignored = {"HEAD", "OPTIONS"}
    flask_ops = {
        (rule.rule.replace("<", "{").replace(">", "}"), m.lower())
        for rule in world.app.url_map.iter_rules()
        for m in rule.methods - ignored
    }
    doc_ops = {(path, m) for path, item in doc["paths"].items() for m in item}
    assert flask_ops == doc_ops
    for path, item in doc["paths"].items():
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(path.replace("}", "{").split("{")[1::2]), (method, path)
            assert all(int(code) < 500 or code == "503" for code in op["responses"]), (method, path)
            if op["security"]:
                (scope,) = op["security"][0]["bearer"]
                assert scope in SCOPES
    schemes = doc["components"]["securitySchemes"]["bearer"]
    assert schemes["scheme"] == "bearer" and schemes["bearerFormat"] == "JWT"


# --- operator API ---------------------------------------------------------------------------


def test_meter_endpoints(world, client):
    world.meter("meter-1")
    world.meter("meter-2", enroll=False)
    h = world.auth()
    assert [m["meter_id"] for m in client.get("/v1/meters", headers=h).get_json()] == ["meter-1"]

    pem = cert_to_pem(world.certs["meter-2"]).decode()
    r = client.post("/v1/meters", json={"cert_pem": pem}, headers=h)
    assert r.status_code == 201 and r.headers["Location"] == "/v1/meters/meter-2"
    assert r.get_json()["status"] == "active"
    assert client.post("/v1/meters", json={"cert_pem": pem}, headers=h).status_code == 201  # idempotent

    page = client.get("/v1/meters?limit=1&after=meter-1", headers=h).get_json()
    assert [m["meter_id"] for m in page] == ["meter-2"]
    got = client.get("/v1/meters/meter-2", headers=h).get_json()
    assert got["meter_id"] == "meter-2" and got["groups"] == []

    r = client.post("/v1/meters/meter-2/revoke", json={"reason": "superseded"}, headers=h)
    assert r.status_code == 200
    assert r.get_json()["status"] == "revoked" and r.get_json()["revoke_reason"] == "superseded"
    r = client.post("/v1/meters/meter-1/revoke", headers=h)  # no body: keyCompromise
    assert r.get_json()["revoke_reason"] == "keyCompromise"
    audit = client.get("/v1/audit", headers=h).get_json()
    assert [e["actor"] for e in audit if e["action"] == "meter.revoke"] == ["token:ops", "token:ops"]


def test_group_endpoints(world, client):
    for m in ("meter-1", "meter-2", "meter-3"):
        world.meter(m)
    h = world.auth()
    r = client.post(
        "/v1/groups",
        json={"group_id": "grp-a", "members": ["meter-1", "meter-2"], "suite": "GK1", "mode": "attested"},
        headers=h,
    )
    assert r.status_code == 201 and r.headers["Location"] == "/v1/groups/grp-a"
    g = r.get_json()
    assert g["mode"] == "attested" and g["session"]["state"] == "round1" and g["session"]["trigger"] == "create"

    assert [x["group_id"] for x in client.get("/v1/groups", headers=h).get_json()] == ["grp-a"]
    assert client.get("/v1/groups/grp-a", headers=h).get_json()["suite"] == "GK1"

    r = client.patch("/v1/groups/grp-a", json={"rekey_interval_s": 3600}, headers=h)
    assert r.status_code == 200 and r.get_json()["rekey_interval_s"] == 3600

    r = client.post("/v1/groups/grp-a/members", json={"members": ["meter-3"]}, headers=h)
    assert r.status_code == 200
    assert {m["meter_id"] for m in r.get_json()["members"]} == {"meter-1", "meter-2", "meter-3"}

    r = client.delete("/v1/groups/grp-a/members/meter-3", headers=h)
    assert r.status_code == 200 and {m["meter_id"] for m in r.get_json()["members"]} == {"meter-1", "meter-2"}

    r = client.post("/v1/groups/grp-a/rekey", headers=h)
    assert r.status_code == 202 and r.get_json()["group_id"] == "grp-a"
    # epoch 1 is still being negotiated with its roster from before: the rekey waits for the next
    # session, which names the request (epoch 1 again if this one is superseded, else epoch 2)
    assert r.get_json()["epoch"] == 0 and r.get_json()["target_epoch"] == 1
    rid = r.get_json()["request_id"]
    with world.store.read() as conn:
        manual = select(t.pending_changes.c.id).where(t.pending_changes.c.kind == "manual")
        assert conn.execute(manual).scalars().all() == [rid]
    assert client.get("/v1/groups/grp-a/epochs?limit=5", headers=h).get_json() == []

    r = client.get("/v1/meters/meter-1/groups")
    assert r.get_json() == {"meter_id": "meter-1", "groups": ["grp-a"]}


def test_commands(world, client, tmp_path):
    world.meter("meter-1")
    h = world.auth("groups:rekey", "commands:send")
    client.post("/v1/groups", json={"group_id": "grp-c", "members": ["meter-1"]}, headers=h)
    r = client.post("/v1/groups/grp-c/commands", json={"command": {"action": "shed", "pct": 10, "why": "ü"}}, headers=h)
    assert r.status_code == 202 and r.get_json()["group_id"] == "grp-c"
    assert world.sent_commands == [("grp-c", '{"action":"shed","pct":10,"why":"ü"}'.encode())]
    assert_problem(client.post("/v1/groups/nope/commands", json={"command": 1}, headers=h), 404)
    client.post("/v1/groups", json={"group_id": "no-epoch", "members": []}, headers=h)
    assert_problem(client.post("/v1/groups/no-epoch/commands", json={"command": 1}, headers=h), 400)

    bare = make_world(tmp_path / "bare", command_sender=None)
    try:
        c = bare.app.test_client()
        h = bare.auth()
        c.post("/v1/groups", json={"group_id": "grp-c", "members": []}, headers=h)
        body = assert_problem(c.post("/v1/groups/grp-c/commands", json={"command": "x"}, headers=h), 409)
        assert body["detail"] == "no controller is configured on this sidecar"
    finally:
        bare.batcher.close()
        bare.store.dispose()


def test_audit_health_metrics_and_trust(world, client):
    world.meter("meter-1")
    h = world.auth()
    entries = client.get("/v1/audit?after=0&limit=10", headers=h).get_json()
    assert entries[0]["action"] == "meter.enroll" and entries[0]["seq"] == 1
    assert client.get("/v1/audit?after=1", headers=h).get_json() == []
    v = client.get("/v1/audit/verify", headers=h).get_json()
    assert v == {"ok": True, "entries": 1, "head": entries[0]["hash"], "problem": ""}

    health = client.get("/healthz").get_json()
    assert health == {"status": "ok", "meters": 1, "groups": 0, "live_sessions": 0, "epochs": 0}

    info = client.get("/v1/gateway").get_json()
    assert info["gateway_id"] == "gateway" and "BEGIN CERTIFICATE" in info["cert_pem"] + info["ca_pem"]
    r = client.get("/v1/crl")
    assert r.status_code == 200 and r.mimetype == "application/pkix-crl"
    x509.load_der_x509_crl(r.get_data())

    client.post("/v1/groups/grp-x/rounds", data=b"\xa0", content_type="application/cose")  # a malformed message
    client.get("/v1/nothing-here")
    text = client.get("/metrics").get_data(as_text=True)
    for line in (
        "gridkey_meters 1.0",
        "gridkey_groups 0.0",
        "gridkey_live_sessions 0.0",
        "gridkey_epochs_committed_total 0.0",
        'gridkey_dropped_messages_total{reason="malformed"} 1.0',
        'gridkey_http_requests_total{method="GET",route="/v1/audit",status="200"} 2.0',
        'gridkey_http_requests_total{method="POST",route="/v1/groups/<group_id>/rounds",status="400"} 1.0',
        'gridkey_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
    ):
        assert line in text, line


def test_crl_is_404_without_a_local_ca(world, client, monkeypatch):
    monkeypatch.setattr(world.gw.trust, "crl", lambda now: None)
    assert_problem(client.get("/v1/crl"), 404)


# --- errors ---------------------------------------------------------------------------------


def test_problem_details_everywhere(world, client, caplog):
    world.meter("meter-1")
    h = world.auth()
    assert_problem(client.get("/v1/nope"), 404)
    r = client.put("/v1/groups", headers=h)
    assert_problem(r, 405)
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    body = assert_problem(
        client.post("/v1/groups", data=b"x" * (64 * 1024 + 1), headers=h, content_type="application/json"), 413
    )
    assert "65536" in body["detail"]
    assert_problem(client.post("/v1/groups", data=b"{", headers=h, content_type="application/json"), 400)
    assert_problem(client.post("/v1/groups", data=b"[1]", headers=h, content_type="application/json"), 400)
    assert_problem(
        client.post("/v1/groups", data=b'{"group_id": NaN}', headers=h, content_type="application/json"), 400
    )
    assert_problem(client.post("/v1/groups", data=b"{}", headers=h, content_type="text/plain"), 415)
    assert_problem(client.post("/v1/groups", headers=h), 400)
    for bad in (
        {"group_id": "g", "members": [], "extra": 1},
        {"group_id": "g"},
        {"group_id": 5, "members": []},
        {"group_id": "g", "members": "meter-1"},
        {"group_id": "g", "members": [], "mode": 0},
        {"group_id": "g", "members": [], "suite": "GK9"},
        {"group_id": "g", "members": [], "rekey_interval_s": True},
        {"group_id": "g", "members": [], "rekey_interval_s": -1},
        {"group_id": "bad id!", "members": []},
        {"group_id": "g", "members": ["meter-1", "meter-1"]},
    ):
        assert_problem(client.post("/v1/groups", json=bad, headers=h), 400)
    assert_problem(client.post("/v1/groups", json={"group_id": "g", "members": ["ghost"]}, headers=h), 404)
    assert client.post("/v1/groups", json={"group_id": "g", "members": []}, headers=h).status_code == 201
    assert_problem(client.post("/v1/groups", json={"group_id": "g", "members": []}, headers=h), 409)
    assert_problem(client.get("/v1/groups/ghost", headers=h), 404)
    assert_problem(client.get("/v1/meters/bad%20id", headers=h), 400)
    assert_problem(client.get("/v1/groups/g/epochs?limit=0", headers=h), 400)
    assert_problem(client.get("/v1/audit?after=x", headers=h), 400)
    assert_problem(client.post("/v1/meters/meter-1/revoke", json={"reason": "bored"}, headers=h), 400)
    assert_problem(client.post("/v1/meters", json={"cert_pem": "not a cert"}, headers=h), 400)
    assert_problem(client.post("/v1/groups/g/rounds", data=b"", content_type="application/cose"), 400)
    assert_problem(client.post("/v1/groups/g/rounds", data=b"\x00", content_type="text/plain"), 415)
    assert_problem(client.post("/v1/enroll", data=b"\x84", content_type="application/cose"), 400)
    assert_problem(client.get("/v1/groups/g/session/bogus"), 400)
    assert_problem(client.get("/v1/groups/g/session/start"), 404)
    assert_problem(client.get("/v1/meters/ghost/groups/g/inbox"), 403)
    assert_problem(client.get("/v1/meters/meter-1/groups/g/inbox?wait=31"), 400)
    assert_problem(client.get("/v1/meters/meter-1/groups/g/inbox?wait=nan"), 400)
    assert_problem(client.post("/v1/groups/g/data", data=b"\x01", content_type="application/cose"), 400)
    assert_problem(client.get("/v1/groups/ghost/data"), 404)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_unexpected_exceptions_become_a_logged_500_problem(world, client, monkeypatch, caplog):
    def boom() -> list:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(world.gw, "list_groups", boom)
    body = assert_problem(client.get("/v1/groups", headers=world.auth()), 500)
    assert "secret" not in body["detail"]
    assert any("unhandled RuntimeError" in r.getMessage() for r in caplog.records)


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "not-bearer", "garbage", "expired", "wrong-issuer", "alg-none", "hs256"])
def test_bad_tokens_get_401(world, client, kind):
    def b64(obj) -> str:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"iss": "gridkey", "aud": "gridkey", "sub": "x", "scope": "read", "exp": int(time.time()) + 60}
    headers = {
        "missing": {},
        "not-bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "expired": {"Authorization": f"Bearer {world.token('read', now=int(time.time()) - 7200)}"},
        "wrong-issuer": {"Authorization": f"Bearer {world.token('read', issuer='evil')}"},
        "alg-none": {"Authorization": f"Bearer {b64({'alg': 'none'})}.{b64(claims)}."},
    }
    if kind == "hs256":
        secret = (
            world.dd.token_key()
            .public_key.to_cryptography()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        headers["hs256"] = {"Authorization": f"Bearer {signing_input}.{b64(mac)}"}
    r = client.get("/v1/meters", headers=headers[kind])
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    if kind not in ("missing", "not-bearer"):
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/meters", "read"),
        ("POST", "/v1/meters", "meters:write"),
        ("POST", "/v1/groups", "groups:rekey"),
        ("POST", "/v1/groups/g/commands", "commands:send"),
        ("GET", "/v1/audit", "audit:read"),
        ("GET", "/v1/audit/verify", "audit:read"),
        ("GET", "/v1/events", "read"),
        ("GET", "/v1/groups/g/readings", "readings:read"),
        ("GET", "/v1/groups/g/readings/1", "readings:read"),
    ],
)
def test_missing_scope_gets_403_naming_it(world, client, method, path, scope):
    others = [s for s in SCOPES if s != scope]
    r = client.open(path, method=method, headers=world.auth(*others), json={})
    body = assert_problem(r, 403)
    assert body["scope"] == scope and scope in body["detail"]
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


# --- meters over real HTTP: a whole negotiation, then group data ------------------------------


class HttpMeter:
    """A meter driving its protocol state machine over the REST meter API (what the HTTP agent does)."""

    def __init__(self, w: World, http: httpx.Client, meter_id: str, group_id: str) -> None:
        self.id, self.http, self.group_id, self.w = meter_id, http, group_id, w
        self.cursor = 0
        coord = w.gw.trust.coordinator.signing_key.public_key
        directory = KeyDirectory()
        for c in http.get(f"/v1/groups/{group_id}/certs").json():
            cert = x509.load_pem_x509_certificate(c["cert_pem"].encode())
            directory.add(c["meter_id"], verify_key_from_cryptography(cert.public_key()))
        directory.revocation = read_crl(http.get("/v1/crl").content, w.gw.trust.ca_cert, ms_to_dt(w.gw.clock()))
        self.member = GroupMember(
            suite=get_suite("GK1"),
            me=MemberIdentity(meter_id, w.keys[meter_id]),
            group_id=group_id,
            coordinator_keys=[coord],
            directory=directory,
        )
        self.keys = None
        self.round_statuses: list[int] = []
        self.data_ids: list[int] = []

    def step(self, wait: float = 0) -> int:
        r = self.http.get(
            f"/v1/meters/{self.id}/groups/{self.group_id}/inbox", params={"after": self.cursor, "wait": wait}
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
        body = cbor2.loads(r.content)
        self.cursor = body["cursor"]
        for item in body["items"]:
            if item[0] == "d":
                self.data_ids.append(item[1])
                continue
            _, _sid, kind, msg = item
            if msg is None:
                msg = self.http.get(f"/v1/groups/{self.group_id}/session/{kind}").content
            for ev in self.member.receive(msg, now_ms()):
                if isinstance(ev, Send):
                    resp = self.http.post(
                        f"/v1/groups/{self.group_id}/rounds",
                        content=ev.data,
                        headers={"content-type": "application/cose"},
                    )
                    self.round_statuses.append(resp.status_code)
                    if ev.round == 1:  # a resend of the same message is a harmless duplicate
                        again = self.http.post(f"/v1/groups/{self.group_id}/rounds", content=ev.data)
                        assert again.status_code == 200 and again.json()["duplicate"] is True
                elif isinstance(ev, KeyEstablished):
                    self.keys = ev.keys
        return len(body["items"])


def negotiate(world: World, http: httpx.Client, group_id: str, ids: list[str]) -> list[HttpMeter]:
    """Create a group over REST and drive its first negotiation with meters over HTTP."""
    ops = {"Authorization": f"Bearer {world.token()}"}
    assert http.post("/v1/groups", json={"group_id": group_id, "members": ids}, headers=ops).status_code == 201
    session = cbor2.loads(http.get(f"/v1/groups/{group_id}/session").content)
    assert len(session) == 1 and session[0] == http.get(f"/v1/groups/{group_id}/session/start").content
    meters = [HttpMeter(world, http, m, group_id) for m in ids]
    deadline = time.monotonic() + 20
    while any(m.keys is None for m in meters):
        assert time.monotonic() < deadline, "negotiation did not finish"
        for m in meters:
            m.step()
    assert len({m.keys.key_id for m in meters}) == 1
    return meters


def test_negotiation_and_group_data_over_http(world, live):
    for m in ("meter-1", "meter-2", "meter-3"):
        world.meter(m, enroll=m != "meter-3")
    with httpx.Client(base_url=live.url, timeout=10) as http:
        # self-enrolment, signed by the certificate's own key
        req = MeterRequest(
            "enroll", "meter-3", now_ms(), cert_der=world.certs["meter-3"].public_bytes(Encoding.DER)
        ).sign(world.keys["meter-3"])
        r = http.post("/v1/enroll", content=req, headers={"content-type": "application/cose"})
        assert r.status_code == 201 and r.json()["meter_id"] == "meter-3"
        forged = MeterRequest(
            "enroll", "meter-3", now_ms(), cert_der=world.certs["meter-3"].public_bytes(Encoding.DER)
        ).sign(world.keys["meter-1"])
        assert http.post("/v1/enroll", content=forged).status_code == 403

        ops = {"Authorization": f"Bearer {world.token()}"}
        ids = ["meter-1", "meter-2", "meter-3"]
        meters = negotiate(world, http, "grp-h", ids)
        assert all(s == 204 for m in meters for s in m.round_statuses)
        epochs = http.get("/v1/groups/grp-h/epochs", headers=ops).json()
        assert [e["epoch"] for e in epochs] == [1] and epochs[0]["key_id"] == meters[0].keys.key_id.hex()
        assert len(cbor2.loads(http.get("/v1/groups/grp-h/session").content)) == 4  # start, bundle1, bundle2, commit

        # group data: the gateway relays ciphertext it cannot read
        ch = GroupChannel(get_suite("GK1"), meters[0].keys, "meter-1")
        msg = ch.seal(b"reading: 42 kWh")
        r = http.post("/v1/groups/grp-h/data", content=msg, headers={"content-type": "application/cose"})
        assert r.status_code == 201 and r.json()["duplicate"] is False
        again = http.post("/v1/groups/grp-h/data", content=msg, headers={"content-type": "application/cose"})
        assert again.status_code == 200 and again.json() == {"id": r.json()["id"], "duplicate": True}
        rows = cbor2.loads(http.get("/v1/groups/grp-h/data", params={"after": 0, "limit": 10}).content)
        assert rows == [[r.json()["id"], "meter-1", msg]]
        assert meters[1].step() == 1 and meters[1].data_ids == [r.json()["id"]]  # relayed to the inboxes
        got = GroupChannel(get_suite("GK1"), meters[1].keys, "meter-2").open(msg)
        assert got.plaintext == b"reading: 42 kWh" and got.sender_id == "meter-1"

        # rejoin (signed); an unsigned one is refused
        rejoin = MeterRequest("rejoin", "meter-2", now_ms(), group_id="grp-h").sign(world.keys["meter-2"])
        r = http.post("/v1/groups/grp-h/rejoin", content=rejoin, headers={"content-type": "application/cose"})
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert http.post("/v1/groups/grp-h/rejoin", content=b"\x00").status_code == 400

        # a revoked meter can no longer read the group
        http.post("/v1/meters/meter-3/revoke", json={}, headers=ops)
        assert http.get("/v1/meters/meter-3/groups/grp-h/inbox").status_code == 403

        # a member's signed refusal of the rekey that followed (epoch 2): kept, audited, counted
        def refusal(epoch: int) -> bytes:
            req = MeterRequest("refusal", "meter-2", now_ms(), "grp-h", epoch=epoch, reason="wrong_role", detail="x")
            return req.sign(world.keys["meter-2"])

        cose = {"content-type": "application/cose"}
        r = http.post("/v1/groups/grp-h/refusal", content=refusal(2), headers=cose)
        assert r.status_code == 200 and r.json()["reason"] == "wrong_role", r.text
        g = http.get("/v1/groups/grp-h", headers=ops).json()
        assert {m["meter_id"]: m.get("refusal", {}).get("detail") for m in g["members"]}["meter-2"] == "wrong_role: x"
        bad = http.post("/v1/groups/grp-h/refusal", content=b"\x00", headers=cose)
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        assert http.post("/v1/groups/grp-h/refusal", content=refusal(99), headers=cose).status_code == 409
        metrics = http.get("/metrics").text
        assert "gridkey_epochs_committed_total 1.0" in metrics
        assert 'gridkey_member_refusals_total{reason="wrong_role"} 1.0' in metrics


def test_readings_join_relayed_metadata_and_controller_values(tmp_path):
    """What the gateway relayed (public) and what a sidecar-hosted member decrypted, by digest."""
    delivered = DeliveredReadings()
    w = make_world(tmp_path, reading_values=lambda group_id, digest, wait_s: delivered.get(digest, wait_s))
    handle = run_in_thread(w.app, "127.0.0.1", 0, threads=8)
    try:
        for m in ("meter-1", "meter-2"):
            w.meter(m)
        with httpx.Client(base_url=handle.url, timeout=10) as http:
            meters = negotiate(w, http, "grp-r", ["meter-1", "meter-2"])
            ch = GroupChannel(get_suite("GK1"), meters[0].keys, "meter-1")
            sent = {"kWh": 0.5}
            msg = ch.seal(json.dumps(sent).encode())
            rid = http.post("/v1/groups/grp-r/data", content=msg, headers={"content-type": "application/cose"}).json()
            cmd = ch.seal(b"not a reading", ContentType.COMMAND)
            cid = http.post("/v1/groups/grp-r/data", content=cmd, headers={"content-type": "application/cose"}).json()
            h = w.auth("readings:read")

            listed = http.get("/v1/groups/grp-r/readings", headers=h).json()
            digest = hashlib.sha256(msg).hexdigest()
            assert listed == [
                {
                    "id": rid["id"],
                    "group_id": "grp-r",
                    "sender": "meter-1",
                    "epoch": 1,
                    "key_id": meters[0].keys.key_id.hex(),
                    "seq": 0,
                    "size": len(msg),
                    "digest": digest,
                    "received_at": listed[0]["received_at"],
                    "value_status": "not-delivered",
                }
            ]  # the command is not a reading, and nothing was decrypted yet
            assert http.get("/v1/groups/grp-r/readings", params={"after": rid["id"]}, headers=h).json() == []

            # the controller decrypts it while a request waits for it
            threading.Timer(0.3, delivered.add, (digest, {"from": "meter-1", "epoch": 1, "value": sent})).start()
            t0 = time.monotonic()
            one = http.get(f"/v1/groups/grp-r/readings/{rid['id']}", params={"wait": 5}, headers=h).json()
            assert one["value_status"] == "decrypted" and one["value"] == sent and time.monotonic() - t0 < 3
            assert http.get("/v1/groups/grp-r/readings", headers=h).json()[0]["value"] == sent

            assert_problem(http.get(f"/v1/groups/grp-r/readings/{cid['id']}", headers=h), 404)
            assert_problem(http.get("/v1/groups/nope/readings", headers=h), 404)
            assert_problem(http.get("/v1/groups/grp-r/readings/1", params={"wait": 11}, headers=h), 400)
            assert_problem(http.get("/v1/groups/grp-r/readings/x", headers=h), 400)
    finally:
        delivered.close()
        handle.close()
        w.batcher.close()
        w.store.dispose()


def test_readings_without_a_controller_say_so(world, live):
    for m in ("meter-1", "meter-2"):
        world.meter(m)
    with httpx.Client(base_url=live.url, timeout=10) as http:
        meters = negotiate(world, http, "grp-n", ["meter-1", "meter-2"])
        msg = GroupChannel(get_suite("GK1"), meters[1].keys, "meter-2").seal(b'{"kWh": 1}')
        rid = http.post("/v1/groups/grp-n/data", content=msg, headers={"content-type": "application/cose"}).json()
        h = world.auth("readings:read")
        got = http.get(f"/v1/groups/grp-n/readings/{rid['id']}", params={"wait": 5}, headers=h)
        assert got.status_code == 200 and got.elapsed.total_seconds() < 2  # nothing to wait for
        body = got.json()
        assert body["value_status"] == "no-controller" and "value" not in body and body["sender"] == "meter-2"


# --- events and long polls ------------------------------------------------------------------


class SseReader:
    """Reads an event stream on a thread; events land in a queue as (id, kind, data)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.ready.wait(5)

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                self.status = resp.status_code
                self.content_type = resp.headers.get("content-type", "")
                self.ready.set()
                fields: dict[str, str] = {}
                for line in resp.iter_lines():
                    if self._stop.is_set():
                        break
                    if line == "":
                        if "data" in fields:
                            self.events.put((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        fields[name] = value
        except httpx.HTTPError:
            pass
        finally:
            self.ready.set()

    def wait_for(self, kind: str, timeout: float = 5.0) -> list[tuple[int, str, dict]]:
        seen = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                ev = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            seen.append(ev)
            if ev[1] == kind:
                return seen
        raise AssertionError(f"no {kind} event within {timeout} s; saw {[e[1] for e in seen]}")

    def close(self) -> None:
        self._stop.set()  # the reader wakes at the next keepalive (the test apps send one every 0.5 s)
        self._thread.join(5)
        assert not self._thread.is_alive()
        self._client.close()


def test_server_sent_events_live_and_resumed(world, live):
    world.meter("meter-1")
    world.meter("meter-2")
    token = world.token()
    h = {"Authorization": f"Bearer {token}"}
    reader = SseReader(f"{live.url}/v1/events", h)
    try:
        assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
        seen = reader.wait_for("meter.enrolled")  # replayed from the store
        assert seen[-1][2]["meter_id"] in ("meter-1", "meter-2")
        t0 = time.monotonic()
        with httpx.Client(base_url=live.url, headers=h, timeout=10) as http:
            r = http.post("/v1/groups", json={"group_id": "grp-s", "members": ["meter-1", "meter-2"]})
            assert r.status_code == 201
        created = reader.wait_for("group.created")[-1]
        started = reader.wait_for("session.started")[-1]
        assert time.monotonic() - t0 < 3
        assert created[2]["group_id"] == "grp-s" and started[2]["members"] == ["meter-1", "meter-2"]
        assert "data" not in started[2] and started[2]["epoch"] == 1  # metadata only, never the message bytes
    finally:
        reader.close()

    # meanwhile (no stream open): changes to this group and another; resuming with Last-Event-ID
    # replays the missed ones of this group only, then carries on live
    world.gw.create_group("grp-other", members=[], actor="test")
    world.gw.set_rekey_interval("grp-s", 60, actor="test")
    resumed = SseReader(f"{live.url}/v1/events?group=grp-s", {**h, "Last-Event-ID": str(started[0])})
    try:
        seen = resumed.wait_for("group.updated")
        assert [e[1] for e in seen] == ["group.updated"] and seen[0][0] > started[0]
        assert seen[0][2] == {**seen[0][2], "group_id": "grp-s", "rekey_interval_s": 60}
        world.gw.set_rekey_interval("grp-other", 60, actor="test")  # other group: filtered out
        world.gw.remove_member("grp-s", "meter-2", actor="test")
        seen = resumed.wait_for("member.removed")
        assert [e[1] for e in seen] == ["member.removed"] and seen[0][2]["meter_id"] == "meter-2"
        assert resumed.wait_for("session.aborted")[-1][2]["reason"] == "superseded"
    finally:
        resumed.close()

    with httpx.Client(base_url=live.url, headers=h, timeout=10) as http:
        r = http.get("/v1/events", params={"after": started[0]}, headers={"Last-Event-ID": "x"})
        assert r.status_code == 400


def test_event_stream_from_now_names_the_newest_event_first(world, live):
    """`after=now` skips the history but tells the client where it starts (Last-Event-ID)."""
    world.meter("meter-1")
    world.meter("meter-2")
    head = world.gw.latest_event_id()
    assert head > 0
    h = world.auth("read")
    with httpx.Client(base_url=live.url, timeout=httpx.Timeout(10, read=10)) as http:
        with http.stream("GET", "/v1/events", params={"after": "now"}, headers=h) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines).startswith("retry: ") and next(lines) == ""
            assert (next(lines), next(lines)) == (f"id: {head}", "")  # no data: nothing dispatched
            world.gw.create_group("grp-now", members=[], actor="test")
            got = [next(lines) for _ in range(3)]
            assert got[0] == f"id: {head + 1}" and got[1] == "event: group.created", got
        assert_problem(http.get("/v1/events", params={"after": "later"}, headers=h), 400)


def test_event_streams_are_bounded_and_keep_alive(tmp_path):
    w = make_world(tmp_path, max_streams=1, heartbeat_s=0.2)
    handle = run_in_thread(w.app, threads=8)
    try:
        h = {"Authorization": f"Bearer {w.token('read')}"}
        with httpx.Client(base_url=handle.url, timeout=httpx.Timeout(5, read=5)) as http:
            with http.stream("GET", "/v1/events", headers=h) as first:
                assert first.status_code == 200
                lines = first.iter_lines()
                assert next(lines) == "retry: 3000"
                assert [next(lines) for _ in range(3)] == ["", ": keepalive", ""]
                second = http.get("/v1/events", headers=h)
                assert_problem(second, 429)
                assert second.headers["Retry-After"]
            deadline = time.monotonic() + 5
            while w.app.extensions["gridkey.rest"].live.streams.in_use and time.monotonic() < deadline:
                time.sleep(0.05)  # the server notices the disconnect at the next keepalive
            with http.stream("GET", "/v1/events", headers=h) as third:
                assert third.status_code == 200
    finally:
        handle.close()
        w.batcher.close()
        w.store.dispose()


def test_inbox_long_poll_returns_when_an_event_arrives(world, live):
    world.meter("meter-1")
    world.meter("meter-2")
    world.gw.create_group("grp-l", members=["meter-1", "meter-2"], actor="test")
    url = "/v1/meters/meter-1/groups/grp-l/inbox"
    with httpx.Client(base_url=live.url, timeout=httpx.Timeout(10, read=40)) as http:
        first = cbor2.loads(http.get(url).content)
        assert [i[2] for i in first["items"]] == ["start"]
        cursor = first["cursor"]
        t0 = time.monotonic()
        empty = cbor2.loads(http.get(url, params={"after": cursor, "wait": 0.3}).content)
        assert empty["items"] == [] and 0.25 < time.monotonic() - t0 < 3

        result: dict = {}

        def poll() -> None:
            t = time.monotonic()
            resp = http.get(url, params={"after": cursor, "wait": 20})
            result.update(body=cbor2.loads(resp.content), elapsed=time.monotonic() - t)

        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.3)
        world.gw.remove_member("grp-l", "meter-2", actor="test")  # cancels the session: an abort for meter-1
        th.join(10)
        assert not th.is_alive()
        assert result["elapsed"] < 5
        kinds = [i[2] for i in result["body"]["items"]]
        assert kinds and kinds[0] == "abort" and result["body"]["cursor"] > cursor


# --- schemathesis ---------------------------------------------------------------------------


def _store_digest(store: Store) -> tuple[dict[str, int], str]:
    tables = (t.meters, t.groups, t.memberships, t.epochs, t.audit, t.sessions, t.group_data)
    h = hashlib.sha256()
    counts = {}
    with store.read() as conn:
        for table in tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            counts[table.name] = len(rows)
            h.update(repr([tuple(r) for r in rows]).encode())
    return counts, h.hexdigest()


def test_schemathesis_finds_no_server_errors_and_changes_nothing(world, live, caplog):
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.core import NotSet

    schemathesis.serializer.alias("application/cose", "application/octet-stream")
    for m in ("fz-meter-1", "fz-meter-2"):
        world.meter(m)
    world.gw.create_group("fz-group", members=["fz-meter-1", "fz-meter-2"], actor="test")
    before = _store_digest(world.store)
    assert world.gw.verify_audit().ok

    spec = httpx.get(f"{live.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    headers = {"Authorization": f"Bearer {world.token()}"}
    pinned = {"group_id": "fz-group", "meter_id": "fz-meter-1"}
    # Besides "no 5xx": every response is documented (status, media type, schema), so the document stays true.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    statuses: dict[str, set[int]] = {}
    ran = 0
    passes = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/events":  # an endless stream; covered by the SSE tests
            continue
        spec_op = spec["paths"][op.path][op.method.lower()]
        body = spec_op.get("requestBody", {}).get("content", {})
        # Positive cases only where they cannot be valid writes: reads, and raw bodies that would need a
        # COSE signature (random bytes never carry one).
        harmless = op.method.upper() == "GET" or "application/cose" in body
        passes.append((op, GenerationMode.NEGATIVE, None))
        if harmless:
            passes.append((op, GenerationMode.POSITIVE, None))
        # Invalid bodies aimed at the rows that exist: they must be refused, not applied.
        path_params = {p["name"] for p in spec_op.get("parameters", []) if p["in"] == "path"}
        if body and path_params and path_params <= set(pinned):
            passes.append((op, GenerationMode.NEGATIVE, {k: pinned[k] for k in path_params}))
        # Reads of the rows that exist (not the inbox: a member's valid long poll just waits).
        readable = path_params and path_params <= set(pinned) | {"kind"} and not op.path.endswith("/inbox")
        if op.method.upper() == "GET" and readable:
            passes.append((op, GenerationMode.POSITIVE, {k: pinned[k] for k in path_params if k in pinned}))

    def fuzz(op, mode, path_parameters) -> None:
        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        # The token is fixed so that every negative case breaks the body, path or query, not the auth
        # (bad tokens have their own tests).
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters, headers=headers))
        def run(case) -> None:
            # With the rows pinned, only a broken body counts (no body at all is a valid revoke).
            pinned_write = path_parameters is not None and mode is GenerationMode.NEGATIVE
            hypothesis.assume(not (pinned_write and isinstance(case.body, NotSet)))
            resp = case.call(base_url=live.url, timeout=10)
            statuses.setdefault(f"{op.method.upper()} {op.path}", set()).add(resp.status_code)
            case.validate_response(resp, checks=checks)
            if resp.status_code >= 400:
                ctype = {k.lower(): v for k, v in resp.headers.items()}["content-type"][0]
                assert ctype.startswith(PROBLEM), (case.method, case.path, resp.status_code, resp.text)
            elif op.method.upper() != "GET":
                raise AssertionError(f"{mode.value} case was applied: {case.method} {case.path} {case.body!r}")

        with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # nothing here can be made invalid
            run()

    for op, mode, path_parameters in passes:
        fuzz(op, mode, path_parameters)
        ran += 1
    operations = [(path, m) for path, item in openapi_document()["paths"].items() for m in item if path != "/v1/events"]
    assert ran > 30 and len(statuses) == len(operations)  # every operation but the event stream
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert _store_digest(world.store) == before
    assert world.gw.verify_audit().ok
    assert not [r for r in caplog.records if r.name.startswith("gridkey") and r.levelno >= logging.ERROR]
