"""Bearer tokens for the operator API: ES256 JWTs with space-separated scopes.

Small deployments mint tokens with the data dir's signing key (``gridkey token issue``, which
calls :func:`issue_token`); larger ones point :class:`TokenVerifier` at an OAuth2/OIDC provider's
JWKS. Only ES256 is accepted, whatever the token header says: pinning the algorithm is what
defeats ``alg: none`` and the HS256-with-the-public-key confusion. Meters never use tokens; they
authenticate by their COSE signatures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SCOPES = ("read", "meters:write", "groups:rekey", "audit:read", "commands:send", "readings:read")
ALGORITHM = "ES256"
MAX_TOKEN_LEN = 8192  # a JWT bigger than this is not one we issued or would accept
MAX_SUBJECT_LEN = 128


class TokenError(Exception):
    """A token was refused (401), or the keys to check it are unreachable (503)."""

    def __init__(self, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Principal:
    """Who called: the token's subject and the scopes it grants."""

    subject: str
    scopes: frozenset[str]
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.subject}"


def _is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def load_public_key(key: object) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from a ``cryptography`` key, a gridkey VerifyKey/SigningKey, or PEM."""
    if hasattr(key, "to_cryptography"):  # gridkey VerifyKey (or SigningKey: take its public half)
        key = key.to_cryptography()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        if b"PRIVATE KEY" in key:
            key = serialization.load_pem_private_key(key, None).public_key()
        else:
            key = serialization.load_pem_public_key(key)
    if not _is_p256(key):
        raise ValueError("token keys must be ECDSA P-256 (ES256)")
    return key  # type: ignore[return-value]


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint, used as ``kid`` so a JWKS can hold several keys during rotation."""
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def public_jwks(key: object) -> dict[str, Any]:
    """A JWKS document for the token key (to hand to other verifiers)."""
    pub = load_public_key(key)
    jwk = dict(jwt.algorithms.ECAlgorithm.to_jwk(pub, as_dict=True))
    jwk.update(kid=jwk_thumbprint(pub), use="sig", alg=ALGORITHM)
    return {"keys": [jwk]}


class TokenVerifier:
    """Checks ES256 bearer tokens against one key or a JWKS URL; returns a :class:`Principal`."""

    def __init__(
        self,
        *,
        public_key: object = None,
        jwks_url: str | None = None,
        issuer: str = "gridkey",
        audience: str = "gridkey",
        leeway_s: int = 30,
    ) -> None:
        if (public_key is None) == (jwks_url is None):
            raise ValueError("give exactly one of public_key or jwks_url")
        self._key = load_public_key(public_key) if public_key is not None else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5) if jwks_url else None
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s

    def _signing_key(self, token: str) -> ec.EllipticCurvePublicKey:
        if self._key is not None:
            return self._key
        assert self._jwks is not None
        try:
            jwk = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise TokenError("the token signing keys (JWKS) are unreachable", status=503) from None
        except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.DecodeError) as exc:
            raise TokenError(f"no usable signing key for this token: {exc}") from None
        if not _is_p256(jwk.key):
            raise TokenError("the token's signing key is not an ES256 key")
        return jwk.key

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_LEN:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm must be {ALGORITHM}")
        key = self._signing_key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token audience is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise TokenError("token signature or claims are invalid") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LEN or not sub.isprintable():
            raise TokenError("token subject must be a printable string of at most 128 characters")
        return Principal(sub, _scopes(claims.get("scope")), claims)


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):  # some providers send a JSON array
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def issue_token(
    signing_key_pem: bytes,
    *,
    subject: str,
    scopes: list[str],
    ttl_s: int,
    issuer: str = "gridkey",
    audience: str = "gridkey",
    now: int | None = None,
) -> str:
    """Mint an ES256 token (for small deployments without an identity provider)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError("ttl_s must be a positive number of seconds")
    if not subject or len(subject) > MAX_SUBJECT_LEN or not subject.isprintable():
        raise ValueError("subject must be a printable string of at most 128 characters")
    key = serialization.load_pem_private_key(signing_key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the token signing key must be ECDSA P-256")
    iat = int(time.time()) if now is None else int(now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "scope": " ".join(dict.fromkeys(scopes)),
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl_s,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": jwk_thumbprint(key.public_key()), "typ": "JWT"})
