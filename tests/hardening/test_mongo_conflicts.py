"""Issue 14, "MongoDB write conflicts reach clients": concurrent transaction Bundles that only create
new resources touch different documents and must all succeed (no 503 "concurrent transaction").

They collided on one document: the catalog entry of each new collection's search indexes, flipped to
multikey by the first array document, which every concurrent first transaction wrote (store/mongo.py
``_create_type_indexes`` now flips it outside any transaction). A conflict that still happens is re-run
inside the server (api/limits.py ``dispatch_retrying``), shown here with a fail point that makes the
database answer ``WriteConflict`` / ``TransientTransactionError`` a given number of times."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import SecantusServer, fresh_db_url, mongo_url  # noqa: F401 - fixtures

WRITERS = 8
BUNDLES_PER_WRITER = 12
ENTRIES = 4


def create_bundle(writer: int, n: int) -> dict[str, object]:
    entries = []
    for k in range(ENTRIES):
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{writer:04d}{n:04d}{k:04d}",
                        "resource": {"resourceType": "Patient", "gender": "female",
                                     "name": [{"family": f"W{writer}", "given": [f"n{n}k{k}"]}],
                                     "identifier": [{"system": "urn:test", "value": f"{writer}-{n}-{k}"}]},
                        "request": {"method": "POST", "url": "Patient",
                                    "ifNoneExist": f"identifier=urn:test|{writer}-{n}-{k}"}})
    entries.append({"resource": {"resourceType": "Observation", "status": "final",
                                 "code": {"text": "weight"},
                                 "subject": {"reference": entries[0]["fullUrl"]}},
                    "request": {"method": "POST", "url": "Observation"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture
async def mongo_app(tmp_path: Path, fresh_db_url: str) -> AsyncIterator[Starlette]:  # noqa: F811
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), store_url=fresh_db_url, auth=False)
    app = create_app(settings)
    await app.state.services.store.open()
    try:
        yield app
    finally:
        await app.state.services.store.close()


async def test_concurrent_create_only_transactions_do_not_conflict(mongo_app: Starlette) -> None:
    transport = httpx.ASGITransport(app=mongo_app)
    statuses: list[int] = []
    bodies: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir", timeout=60) as client:
        async def writer(w: int) -> None:
            for n in range(BUNDLES_PER_WRITER):
                r = await client.post("", json=create_bundle(w, n))
                statuses.append(r.status_code)
                if r.status_code != 200:
                    bodies.append(r.text)

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        assert statuses.count(200) == WRITERS * BUNDLES_PER_WRITER, (statuses, bodies[:3])
        r = await client.get("/Patient", params={"_summary": "count"})
        assert r.json()["total"] == WRITERS * BUNDLES_PER_WRITER * ENTRIES


@pytest.fixture(scope="module")
def failpoint_server() -> Iterator[SecantusServer]:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("arms fail points on a SecantusDB of its own")
    server = SecantusServer(durable=False, extra_args=("--enable-test-commands",))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def fail_inserts(url: str, times: int) -> None:
    """The next ``times`` insert commands fail as a lost transaction race does."""
    with MongoClient(url, directConnection=True) as c:
        c.admin.command({"configureFailPoint": "failCommand", "mode": {"times": times},
                         "data": {"failCommands": ["insert"], "errorCode": 112,
                                  "errorLabels": ["TransientTransactionError"]}})


async def _app_on(url: str, tmp_path: Path) -> Starlette:
    app = create_app(Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), store_url=url, auth=False))
    await app.state.services.store.open()
    return app


async def test_a_conflicting_transaction_is_run_again_inside_the_server(failpoint_server: SecantusServer,
                                                                         tmp_path: Path) -> None:
    app = await _app_on(failpoint_server.url + "retry", tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir") as client:
            assert (await client.post("", json=create_bundle(0, 0))).status_code == 200  # collections exist
            fail_inserts(failpoint_server.url, 2)
            r = await client.post("", json=create_bundle(1, 0))
            assert r.status_code == 200, r.text
            assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201"] * (ENTRIES + 1)
            r = await client.get("/Patient", params={"family": "W1", "_summary": "count"})
            assert r.json()["total"] == ENTRIES  # the failed runs left nothing behind
    finally:
        await app.state.services.store.close()


async def test_conflicts_beyond_the_bound_answer_503_with_retry_after(failpoint_server: SecantusServer,
                                                                      tmp_path: Path) -> None:
    app = await _app_on(failpoint_server.url + "bound", tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir") as client:
            assert (await client.post("", json=create_bundle(0, 0))).status_code == 200
            fail_inserts(failpoint_server.url, 1000)
            try:
                r = await client.post("", json=create_bundle(2, 0))
            finally:
                fail_inserts(failpoint_server.url, 0)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            assert r.json()["issue"][0]["code"] == "transient"
            r = await client.get("/Patient", params={"family": "W2", "_summary": "count"})
            assert r.json()["total"] == 0
    finally:
        await app.state.services.store.close()
