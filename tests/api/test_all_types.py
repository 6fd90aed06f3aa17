"""Every one of the 146 R4 resource types: a minimal valid instance is created and read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from tests.api.minimal import MinimalFactory
from tests.conftest import CACHE_DIR

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALL_TYPES = Definitions.load(cache_dir=CACHE_DIR).resource_types()
assert len(ALL_TYPES) == 146, len(ALL_TYPES)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                                          MinimalFactory]]:
    # Its own app and Definitions: conformance types (StructureDefinition, ValueSet...) written here
    # change the server's definitions.
    tmp: Path = tmp_path_factory.mktemp("all-types")
    app = create_app(Settings(data_dir=tmp, cache_dir=str(CACHE_DIR), auth=False))
    svc = app.state.services
    await svc.store.open()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as c:
            yield c, MinimalFactory(svc.definitions)
    finally:
        await svc.store.close()


@pytest.mark.parametrize("type", ALL_TYPES)
async def test_create_and_read_back(module_client: tuple[httpx.AsyncClient, MinimalFactory], type: str) -> None:
    client, factory = module_client
    body = factory.make(type)
    created = await client.post(f"/{type}", json=body)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    read = await client.get(f"/{type}/{rid}")
    assert read.status_code == 200
    doc = read.json()
    assert doc == created.json()
    assert {k: v for k, v in doc.items() if k not in ("id", "meta")} == body
    assert doc["meta"]["versionId"] == "1"
    assert read.headers["etag"] == 'W/"1"'
    # Writing back what was read changes nothing: no new version (as HAPI FHIR answers).
    put = await client.put(f"/{type}/{rid}", json=doc)
    assert put.status_code == 200 and put.json() == doc
    # A change (a tag) makes version 2.
    tagged = {**doc, "meta": {**doc["meta"], "tag": [{"system": "urn:test", "code": "t"}]}}
    put = await client.put(f"/{type}/{rid}", json=tagged)
    assert put.status_code == 200 and put.json()["meta"]["versionId"] == "2"
