"""API fixtures: the real composition root (create_app) with the session's Definitions, an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.api.minimal import MinimalFactory


@pytest.fixture
async def app(settings: Settings, definitions: Definitions) -> AsyncIterator[Starlette]:
    """Overrides the root ``app``: same composition root, but the session's Definitions (their lazy caches
    are costly to rebuild per test). Tests here must not write conformance resources."""
    generation = definitions.generation
    application = create_app(settings, definitions=definitions)
    assert application.state.services.definitions is definitions
    await application.state.services.store.open()
    try:
        yield application
    finally:
        await application.state.services.store.close()
    assert definitions.generation == generation, "a test changed the shared Definitions: give it its own app"


@pytest.fixture(scope="session")
def minimal(definitions: Definitions) -> MinimalFactory:
    return MinimalFactory(definitions)


@pytest.fixture
async def raw_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client that does not raise on server errors, so a 500 shows up as a status."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as c:
        yield c


def oo(resp: httpx.Response) -> dict[str, Any]:
    """The response body, asserted to be an OperationOutcome with at least one issue."""
    assert resp.headers["content-type"].startswith(("application/fhir+json", "application/json")), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] and i["code"] for i in body["issue"])
    return body
