"""An exchange with authentication on: two registered institutions, each with a system client, and
the real app (lifespan included: the audit store) behind an httpx client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.api.enrolment import add_client, add_institution
from fhir_exchange.clock import instant
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from scripts.smart_client import ASSERTION_TYPE, assertion, keygen

BASE = "http://test/fhir"
TOKEN = f"{BASE}/auth/token"


@dataclass
class Institution:
    organization: str
    client_id: str
    pem: bytes
    admin_id: str | None = None


@dataclass
class Exchange:
    app: Starlette
    http: httpx.AsyncClient
    a: Institution
    b: Institution
    c: Institution

    async def token(self, who: Institution, scope: str = "system/*.cruds", *, client_id: str | None = None) -> str:
        r = await self.http.post("/auth/token", data=token_form(client_id or who.client_id, who.pem, scope))
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    async def as_(self, who: Institution, scope: str = "system/*.cruds") -> httpx.AsyncClient:
        token = await self.token(who, scope)
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {token}"})


def token_form(client_id: str, pem: bytes, scope: str, **overrides: Any) -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(client_id, pem, TOKEN), **overrides}


async def enrol(app: Starlette, name: str, hira: str, connection: str = "emr", *, admin: bool = False,
                scopes: list[str] | None = None) -> Institution:
    router = app.state.router
    registry = app.state.registry
    org = await add_institution(router, registry, name=name, hira_id=hira, connection=connection,
                                endpoint_address=None, base_url=BASE)
    jwks, pem = keygen(f"{name}-key")
    now = instant(router.services.clock.now())
    client = await add_client(registry, institution=org["organization"], jwks=jwks, scopes=scopes or [],
                              admin=False, cert_subject=None, token_endpoint=TOKEN, now=now)
    out = Institution(org["organization"], client["client_id"], pem)
    if admin:
        admin_client = await add_client(registry, institution=org["organization"], jwks=jwks, scopes=[],
                                        admin=True, cert_subject=None, token_endpoint=TOKEN, now=now)
        out.admin_id = admin_client["client_id"]
    return out


@pytest.fixture
def secure_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, auth=True, rate_limit=0)


@pytest.fixture
async def exchange(secure_settings: Settings, definitions: Definitions) -> AsyncIterator[Exchange]:
    app = create_app(secure_settings, definitions=definitions)
    async with app.router.lifespan_context(app):
        a = await enrol(app, "가나요양병원", "12345678", "portal")
        b = await enrol(app, "다라대학교병원", "87654321", "emr", admin=True)
        c = await enrol(app, "마바재활병원", "11223344", "exchange")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield Exchange(app, http, a, b, c)
