"""SMART Backend Services tokens: https://hl7.org/fhir/smart-app-launch/backend-services.html

A registered system client proves who it is with a ``private_key_jwt`` client assertion
(RFC 7523) signed RS384 or ES384 by a key of the JWKS it registered: ``iss`` = ``sub`` = its
client_id, ``aud`` = this server's token endpoint URL, ``exp`` at most five minutes ahead, ``jti``
never used before (the caller remembers it until it expires). It gets a short-lived bearer access
token: a JWT the server signs (HS256, with a secret kept in the store so that every worker process
and restart accepts it) carrying the client id and the granted scopes. Every request verifies the
token's signature, expiry and audience; the client's current record (disabled? which institution?)
is read again for each request, so disabling a client revokes its tokens at once.

All cryptography is PyJWT's (with ``cryptography``): no hand-written crypto.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import InvalidTokenError, PyJWKError, PyJWKSetError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300  # seconds: exp at most five minutes ahead (SMART Backend Services)
TOKEN_ALGORITHM = "HS256"


class AuthError(Exception):
    """An assertion or token that is refused: ``error`` is the OAuth 2.0 error code (RFC 6749 §5.2 /
    RFC 6750 §3.1), ``description`` says why (never echoing secrets)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Assertion:
    client_id: str
    jti: str
    exp: int


def unverified_client(assertion: str) -> str:
    """The client an assertion claims to come from (``iss``), read before its key is known."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except InvalidTokenError as exc:
        raise AuthError("invalid_client", f"The client assertion is not a JWT: {exc}") from None
    if header.get("alg") not in ASSERTION_ALGORITHMS:
        raise AuthError("invalid_client", f"The client assertion must be signed with one of "
                        f"{', '.join(ASSERTION_ALGORITHMS)}, not {header.get('alg')!r}")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise AuthError("invalid_client", "The client assertion has no iss (the client_id)")
    return iss


def parse_jwks(jwks: Any) -> PyJWKSet:
    """A client's registered JWKS (public keys only); raises ValueError when unusable."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValueError("a JWKS is a JSON object with a non-empty 'keys' array")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or any(k in key for k in ("d", "p", "q", "k")):
            raise ValueError("a registered JWKS holds public keys only (no 'd', 'p', 'q' or 'k' members)")
    try:
        return PyJWKSet.from_dict(jwks)
    except (PyJWKError, PyJWKSetError) as exc:
        raise ValueError(f"the JWKS cannot be read: {exc}") from None


def _key_for(jwks: PyJWKSet, header: dict[str, Any]) -> list[PyJWK]:
    kid = header.get("kid")
    keys = [k for k in jwks.keys if kid is None or k.key_id == kid]
    if not keys:
        raise AuthError("invalid_client", f"No key of the client's registered JWKS has kid {kid!r}")
    return keys


def verify_assertion(assertion: str, jwks: Any, *, client_id: str, audience: str, now: int) -> Assertion:
    """Check signature, algorithm, iss/sub, aud, exp (≤ 5 minutes ahead) and jti of a client assertion.
    The caller checks that the jti was not used before."""
    try:
        header = jwt.get_unverified_header(assertion)
    except InvalidTokenError as exc:
        raise AuthError("invalid_client", f"The client assertion is not a JWT: {exc}") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise AuthError("invalid_client", f"The client assertion must be signed with one of "
                        f"{', '.join(ASSERTION_ALGORITHMS)}, not {alg!r}")
    try:
        keyset = parse_jwks(jwks)
    except ValueError as exc:
        raise AuthError("invalid_client", f"The client's registered JWKS is unusable: {exc}") from None
    claims: dict[str, Any] | None = None
    last: Exception | None = None
    for key in _key_for(keyset, header):
        try:
            # Expiry is judged below against the server's (injected) clock, not PyJWT's.
            claims = jwt.decode(assertion, key.key, algorithms=[alg], audience=audience, issuer=client_id,
                                options={"require": ["exp", "iss", "sub", "aud", "jti"], "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
            break
        except InvalidTokenError as exc:
            last = exc
    if claims is None:
        raise AuthError("invalid_client", f"The client assertion was refused: {last}")
    if claims.get("sub") != client_id:
        raise AuthError("invalid_client", "The client assertion's sub must equal its iss (the client_id)")
    exp = claims["exp"]
    if not isinstance(exp, int) or exp <= now:
        raise AuthError("invalid_client", "The client assertion has expired")
    if exp > now + MAX_ASSERTION_LIFETIME:
        raise AuthError("invalid_client", f"The client assertion's exp is more than {MAX_ASSERTION_LIFETIME} s "
                        "ahead")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise AuthError("invalid_client", "The client assertion's jti must be a non-empty string")
    return Assertion(client_id, jti, exp)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def issue_token(secret: str, *, client_id: str, scopes: list[str], issuer: str, audience: str, now: int,
                lifetime: int) -> str:
    claims = {"iss": issuer, "sub": client_id, "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": secrets.token_urlsafe(16), "scope": " ".join(scopes)}
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


@dataclass(frozen=True, slots=True)
class AccessToken:
    client_id: str
    scopes: frozenset[str]
    exp: int


def verify_token(token: str, secret: str, *, audience: str, now: int) -> AccessToken:
    """A bearer token this server issued, still valid, for this FHIR base."""
    try:
        claims = jwt.decode(token, secret, algorithms=[TOKEN_ALGORITHM], audience=audience,
                            options={"require": ["exp", "sub", "aud", "iat"], "verify_exp": False,
                                     "verify_iat": False, "verify_nbf": False})
    except InvalidTokenError as exc:
        raise AuthError("invalid_token", f"The access token was refused: {exc}") from None
    if not isinstance(claims["exp"], int) or claims["exp"] <= now:
        raise AuthError("invalid_token", "The access token has expired")
    scope = claims.get("scope")
    return AccessToken(str(claims["sub"]), frozenset(scope.split() if isinstance(scope, str) else ()),
                       int(claims["exp"]))
