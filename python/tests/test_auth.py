"""Bearer tokens: ES256 only, exp/iss/aud enforced, scopes parsed, JWKS supported."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gridkey.transports.rest.auth import (
    SCOPES,
    TokenError,
    TokenVerifier,
    issue_token,
    jwk_thumbprint,
    public_jwks,
)


def _b64(obj: dict | bytes) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def verifier(key) -> TokenVerifier:
    return TokenVerifier(public_key=key.public_key())


def _claims(**over) -> dict:
    now = int(time.time())
    # built when the module is collected: valid long enough for a test scheduled late in a run
    base = {"iss": "gridkey", "aud": "gridkey", "sub": "alice", "scope": "read", "iat": now, "exp": now + 3600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_issue_and_verify_round_trip(pem, verifier):
    token = issue_token(pem, subject="alice", scopes=["read", "groups:rekey"], ttl_s=60)
    p = verifier.verify(token)
    assert p.subject == "alice" and p.actor == "token:alice"
    assert p.scopes == {"read", "groups:rekey"}
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"]
    assert {"iat", "nbf", "exp", "jti"} <= set(p.claims)
    assert p.claims["exp"] - p.claims["iat"] == 60


def test_verifier_accepts_pem_and_gridkey_keys(key, pem):
    token = issue_token(pem, subject="bob", scopes=list(SCOPES), ttl_s=60)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert TokenVerifier(public_key=pub_pem).verify(token).scopes == set(SCOPES)
    assert TokenVerifier(public_key=pem).verify(token).subject == "bob"  # the private PEM: its public half


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (_claims(exp=int(time.time()) - 3600), "expired"),
        (_claims(iss="someone-else"), "issuer"),
        (_claims(aud="another-api"), "audience"),
        (_claims(exp=None), "'exp'"),
        (_claims(sub=None), "'sub'"),
        (_claims(nbf=int(time.time()) + 3600), "not valid yet"),
    ],
)
def test_bad_claims_are_refused(key, verifier, claims, message):
    token = jwt.encode(claims, key, algorithm="ES256")
    with pytest.raises(TokenError, match=message) as info:
        verifier.verify(token)
    assert info.value.status == 401


def test_leeway_tolerates_small_clock_skew(pem, verifier):
    token = issue_token(pem, subject="alice", scopes=["read"], ttl_s=10, now=int(time.time()) - 25)
    assert verifier.verify(token).subject == "alice"  # expired 15 s ago, inside the 30 s leeway


def test_alg_none_and_hs256_confusion_are_refused(key, verifier):
    claims = _claims()
    none_token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(TokenError, match="ES256"):
        verifier.verify(none_token)
    # HS256 with the public key as the HMAC secret: the classic algorithm-confusion attack.
    secret = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="ES256"):
        verifier.verify(f"{signing_input}.{_b64(mac)}")


def test_other_key_and_garbage_are_refused(verifier):
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(jwt.encode(_claims(), other, algorithm="ES256"))
    for garbage in ("", "abc", "a.b.c", "x" * 10_000):
        with pytest.raises(TokenError):
            verifier.verify(garbage)


def test_scope_claim_forms(key, verifier):
    assert verifier.verify(jwt.encode(_claims(scope=["read", 5]), key, algorithm="ES256")).scopes == {"read"}
    assert verifier.verify(jwt.encode(_claims(scope=None), key, algorithm="ES256")).scopes == frozenset()


def test_issue_token_checks_its_inputs(pem):
    with pytest.raises(ValueError, match="unknown scopes"):
        issue_token(pem, subject="a", scopes=["admin"], ttl_s=60)
    with pytest.raises(ValueError, match="ttl_s"):
        issue_token(pem, subject="a", scopes=["read"], ttl_s=0)
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        issue_token(ed, subject="a", scopes=["read"], ttl_s=60)
    with pytest.raises(ValueError, match="exactly one"):
        TokenVerifier()


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_jwks_url(key, pem):
    _JwksHandler.body = json.dumps(public_jwks(key.public_key())).encode()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
        v = TokenVerifier(jwks_url=url)
        token = issue_token(pem, subject="oidc-user", scopes=["read"], ttl_s=60)
        assert jwt.get_unverified_header(token)["kid"] == jwk_thumbprint(key.public_key())
        assert v.verify(token).subject == "oidc-user"
        stranger = ec.generate_private_key(ec.SECP256R1())
        stray = jwt.encode(
            _claims(), stranger, algorithm="ES256", headers={"kid": jwk_thumbprint(stranger.public_key())}
        )
        with pytest.raises(TokenError) as info:
            v.verify(stray)
        assert info.value.status == 401
    finally:
        httpd.shutdown()
        httpd.server_close()
    # The identity provider is down: that is the sidecar's problem (503), not the caller's (401).
    down = TokenVerifier(jwks_url=url)
    with pytest.raises(TokenError) as info:
        down.verify(issue_token(pem, subject="x", scopes=["read"], ttl_s=60))
    assert info.value.status == 503
