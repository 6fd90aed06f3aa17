"""Who is asking, at the HTTP edge: SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html)
and client certificates.

- ``POST [base]/auth/token``: the client-credentials grant with a ``private_key_jwt`` client
  assertion (:mod:`fhir_exchange.security.tokens`); the answer is a bearer token with the granted
  scopes (asked ∩ allowed). A refused assertion is a 401 OperationOutcome with ``WWW-Authenticate``
  (the OAuth 2.0 error code is in the issue's details); a malformed request or an unsupported grant
  a 400.
- ``GET [base]/.well-known/smart-configuration``: how to get a token (SMART discovery).
- Every FHIR request: a client certificate registered to a client (verified by the TLS layer, or
  passed by a trusted reverse proxy in a configured header) or an ``Authorization: Bearer`` token is
  turned into the request's :class:`Actor`; the client's record is read for each request, so a
  disabled client is refused at once. Nothing valid: 401 with ``WWW-Authenticate: Bearer``. The
  CapabilityStatement and the discovery document are public.
- Rate limits: a token bucket per client (``rate_limit`` per second, a burst of twice that), counted
  over every worker process of one ``serve`` (:mod:`fhir_exchange.api.shared`); beyond it a 429 with
  ``Retry-After``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_exchange.api.shared import RateLimiter, SharedMemory
from fhir_exchange.clock import Clock, instant
from fhir_exchange.errors import Category, FhirError, Issue, operation_outcome
from fhir_exchange.security import scopes
from fhir_exchange.security.actor import SYSTEM, Actor
from fhir_exchange.security.registry import Client, Registry
from fhir_exchange.security.tokens import (
    ASSERTION_ALGORITHMS,
    ASSERTION_TYPE,
    AuthError,
    issue_token,
    unverified_client,
    verify_assertion,
    verify_token,
)
from fhir_exchange.settings import Settings

TOKEN_PATH = "auth/token"
SMART_CONFIGURATION_PATH = ".well-known/smart-configuration"
PUBLIC_PATHS = frozenset({"metadata", SMART_CONFIGURATION_PATH})


def unauthorized(error: str, description: str, *, scheme: str = "Bearer") -> FhirError:
    """A 401: the OAuth error code goes in ``WWW-Authenticate`` and in the issue's details."""
    challenge = f'{scheme} realm="fhir-exchange", error="{error}", error_description="{_quote(description)}"'
    return FhirError(Category.UNAUTHORIZED, description, issues=[Issue("error", "login", description, (), error)],
                     headers={"WWW-Authenticate": challenge})


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")[:300]


class Authenticator:
    def __init__(self, settings: Settings, registry: Registry, clock: Clock,
                 limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.clock = clock
        # Shared by the workers of one serve (api/shared.py); this process's own memory otherwise.
        self.limiter = limiter or RateLimiter(settings.rate_limit, SharedMemory())

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def token_endpoint(self, fhir_base: str) -> str:
        return f"{fhir_base}/{TOKEN_PATH}"

    # -- every request ---------------------------------------------------------------------------

    async def actor(self, request: Request, fhir_base: str, path: str) -> Actor:
        """The request's actor; raises 401 when it cannot be established (except on public paths)."""
        if not self.settings.auth:
            return SYSTEM
        at = instant(self.clock.now())
        subject = self._certificate_subject(request)
        if subject is not None:
            client = await self.registry.client_by_certificate(subject, at)
            if client is not None and not client.disabled:
                self.limiter.check(client.client_id)
                return _actor(client, frozenset(client.scopes))
        header = request.headers.get("authorization")
        if header is None:
            if path in PUBLIC_PATHS:
                return Actor(client_id="anonymous")
            raise unauthorized("invalid_request", "This server needs an access token (SMART Backend Services: "
                               f"POST {self.token_endpoint(fhir_base)}) or a registered client certificate")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("invalid_request", "The Authorization header must be 'Bearer <access token>'")
        secret = await self.registry.token_secret(at)
        try:
            access = verify_token(token.strip(), secret, audience=fhir_base, now=self.now())
        except AuthError as exc:
            raise unauthorized(exc.error, exc.description) from None
        client = await self.registry.client(access.client_id, at)
        if client is None or client.disabled:
            raise unauthorized("invalid_token", f"The client {access.client_id} is unknown or disabled")
        self.limiter.check(client.client_id)
        return _actor(client, access.scopes)

    def _certificate_subject(self, request: Request) -> str | None:
        tls = (request.scope.get("extensions") or {}).get("tls") or {}
        subject = tls.get("client_cert_name")
        if isinstance(subject, str) and subject:
            return subject
        header = self.settings.client_cert_header
        if header and request.client is not None and request.client.host in self.settings.trusted_proxies:
            value = request.headers.get(header)
            if value:
                return value
        return None

    # -- the token endpoint ----------------------------------------------------------------------

    async def token(self, request: Request, fhir_base: str) -> Response:
        try:
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
            body = await self._grant(form, fhir_base)
        except FhirError as err:
            return Response(orjson.dumps(operation_outcome(err.issues)), status_code=err.status,
                            headers={**err.headers, "Cache-Control": "no-store"},
                            media_type="application/fhir+json")
        return Response(orjson.dumps(body), media_type="application/json",
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _grant(self, form: dict[str, str], fhir_base: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise _bad_request("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _bad_request("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        asked = form.get("scope") or ""
        if not asked.strip():
            raise _bad_request("invalid_scope", "scope is required (e.g. system/Patient.rs)")
        at = instant(self.clock.now())
        now = self.now()
        try:
            client_id = unverified_client(assertion)
            client = await self.registry.client(client_id, at)
            if client is None or client.disabled:
                raise AuthError("invalid_client", f"The client {client_id} is unknown or disabled")
            if client.jwks is None:
                raise AuthError("invalid_client", f"The client {client_id} has no registered JWKS")
            claims = verify_assertion(assertion, client.jwks, client_id=client_id,
                                      audience=self.token_endpoint(fhir_base), now=now)
            expires = instant(datetime.fromtimestamp(claims.exp, UTC))
            if not await self.registry.use_assertion(client_id, claims.jti, expires, at):
                raise AuthError("invalid_client", "The client assertion's jti was already used (a replay)")
        except AuthError as exc:
            raise unauthorized(exc.error, exc.description, scheme="Bearer") from None
        granted = scopes.grant(asked, frozenset(client.scopes))
        if not granted:
            raise _bad_request("invalid_scope", f"None of the scopes asked ({asked}) is allowed for this client")
        secret = await self.registry.token_secret(at)
        lifetime = self.settings.token_lifetime
        token = issue_token(secret, client_id=client_id, scopes=granted, issuer=fhir_base, audience=fhir_base,
                            now=now, lifetime=lifetime)
        return {"access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": " ".join(granted)}

    # -- discovery -------------------------------------------------------------------------------

    def smart_configuration(self, fhir_base: str) -> dict[str, Any]:
        return {
            "token_endpoint": self.token_endpoint(fhir_base),
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
            "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
        }


def _actor(client: Client, granted: frozenset[str]) -> Actor:
    return Actor(institution=client.institution, client_id=client.client_id, scopes=granted, admin=client.admin)


def _bad_request(error: str, description: str) -> FhirError:
    return FhirError(Category.INVALID, description, issues=[Issue("error", "invalid", description, (), error)])
