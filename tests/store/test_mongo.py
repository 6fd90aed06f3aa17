"""The store contract for the MongoDB adapter, on a real wire-protocol server (no mocks).

The server is ``MONGODB_URL`` when set, otherwise a SecantusDB process started by the session fixture
(tests/mongo_server.py); each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from pymongo import MongoClient

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import ANY, NEW, HistoryQuery, ResourceStore, ResourceVersion, VersionConflict
from tests.mongo_server import SecantusServer, fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.contract import SYS, StoreContract, by_identifier, make_version, ts


class TestMongoStore(StoreContract):
    url: str = ""

    @pytest.fixture(autouse=True)
    def _database(self, fresh_db_url: str) -> None:  # noqa: F811
        self.url = fresh_db_url

    async def make_store(self, tmp_path: Path) -> ResourceStore:
        return MongoStore(self.url, indexer=self.indexer)


# -- MongoDB-only checks -------------------------------------------------------------------------

@pytest.fixture
async def store(fresh_db_url: str) -> AsyncIterator[MongoStore]:  # noqa: F811
    s = MongoStore(fresh_db_url, indexer=StoreContract().indexer, resource_types=("Patient", "Observation"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_concurrent_conditional_creates_make_exactly_one_resource(store: MongoStore) -> None:
    """The If-None-Exist pattern: lock the criteria, search, create if nothing matched."""
    key = "Patient?[('identifier', 'urn:contract|same')]"

    async def conditional_create(n: int) -> str:
        async with store.transaction() as uow:
            await uow.lock_key(key)
            found = await uow.search(by_identifier("Patient", "same"))
            if found.matches:
                return found.matches[0].id
            v, doc = make_version("Patient", f"p{n}", 1, ts(n), identifier=[{"system": SYS, "value": "same"}])
            await uow.put(v, doc, expected_version=NEW)
            return v.id

    ids = await asyncio.gather(*(conditional_create(n) for n in range(12)))
    assert len(set(ids)) == 1
    assert await store.count("Patient") == 1


async def test_concurrent_read_modify_write_units_serialise(store: MongoStore) -> None:
    """Updates without If-Match (read, then write the next version) all succeed, one after another."""
    v, doc = make_version("Patient", "p1", 1, ts(0))
    async with store.transaction() as uow:
        await uow.put(v, doc, expected_version=NEW)

    async def update(n: int) -> None:
        async with store.transaction() as uow:
            cur = await uow.read("Patient", "p1")
            assert cur is not None
            nv, ndoc = make_version("Patient", "p1", cur.version_id + 1, ts(n + 1), name=[{"text": str(n)}])
            await uow.put(nv, ndoc, expected_version=cur.version_id)

    await asyncio.gather(*(update(n) for n in range(10)))
    got = await store.read("Patient", "p1")
    assert got is not None and got.version_id == 11
    assert (await store.history(HistoryQuery("Patient", "p1"))).total == 11


async def test_a_late_conflict_in_a_multi_write_unit_is_a_503_and_writes_nothing(store: MongoStore) -> None:
    for id in ("a", "b"):
        v, doc = make_version("Patient", id, 1, ts(0))
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
    with pytest.raises(FhirError) as info:
        async with store.transaction() as uow:
            await uow.read("Patient", "a")
            # Another writer commits b between our snapshot and our write of b.
            other, odoc = make_version("Patient", "b", 2, ts(1), gender="male")
            async with store.transaction() as uow2:
                await uow2.put(other, odoc, expected_version=1)
            v, doc = make_version("Patient", "b", 2, ts(2))
            await uow.put(v, doc, expected_version=1)
    assert info.value.category in (Category.TRANSIENT, Category.CONFLICT)
    if info.value.category is Category.TRANSIENT:
        assert info.value.headers["Retry-After"]
    b = await store.read("Patient", "b")
    assert b is not None and orjson.loads(b.body).get("gender") == "male"


async def test_body_is_stored_as_binary_and_returned_byte_for_byte(store: MongoStore, fresh_db_url: str) -> None:  # noqa: F811
    raw = b'{"resourceType":"Observation","id":"o1","meta":{"versionId":"1","lastUpdated":"' + ts(1).encode() + \
        b'"},"valueQuantity":{"value":1.50,"unit":"mg"}}'
    v = ResourceVersion("Observation", "o1", 1, ts(1), False, raw, "POST")
    async with store.transaction() as uow:
        await uow.put(v, orjson.loads(raw), expected_version=NEW)
    got = await store.read("Observation", "o1")
    assert got is not None and got.body == raw  # 1.50 survives: no BSON document round trip
    with MongoClient(fresh_db_url) as c:
        stored = c.get_default_database()["Observation"].find_one({"_id": "o1"})
    assert stored is not None and isinstance(stored["body"], bytes)
    assert stored["_s"]["tokc"] == ["_id|o1"]


async def test_indexes_are_created_idempotently_at_start(fresh_db_url: str) -> None:  # noqa: F811
    for n in (1, 2):
        s = MongoStore(fresh_db_url)
        await s.open()
        v, doc = make_version("Patient", "p1", n, ts(n))
        async with s.transaction() as uow:
            await uow.put(v, doc, expected_version=ANY)
        await s.close()
    with MongoClient(fresh_db_url) as c:
        db = c.get_default_database()
        names = set(db["Patient"].index_information())
        assert {"live_by_creation", "s_tok", "s_tokc", "s_ref", "s_date", "s_str", "s_has", "s_cmp"} <= names
        history = set(db["history"].index_information())
        assert {"by_lastUpdated", "type_by_lastUpdated", "instance_by_version"} <= history
        assert db["locks"].index_information()["expire"]["expireAfterSeconds"] > 0


# -- standalone server: no transactions ------------------------------------------------------------

@pytest.fixture(scope="module")
def standalone_url() -> Iterator[str]:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("needs a SecantusDB started in standalone mode")
    server = SecantusServer(standalone=True)
    server.start()
    try:
        yield server.url + "standalone"
    finally:
        server.cleanup()


async def test_standalone_refuses_multi_write_units_and_writes_nothing(
        standalone_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = MongoStore(standalone_url, indexer=StoreContract().indexer)
    with caplog.at_level(logging.WARNING, logger="fhir_exchange.store.mongo"):
        await store.open()
    try:
        assert store.supports_transactions is False
        assert any("STANDALONE" in r.getMessage() for r in caplog.records)
        with pytest.raises(FhirError) as info:
            async with store.transaction() as uow:
                for id in ("x1", "x2"):
                    v, doc = make_version("Patient", id, 1, ts(1))
                    await uow.put(v, doc, expected_version=NEW)
        assert info.value.category is Category.NOT_IMPLEMENTED
        assert "replica set" in info.value.diagnostics
        assert info.value.outcome()["issue"][0]["code"] == "not-supported"  # type: ignore[index]
        assert await store.read("Patient", "x1") is None and await store.read("Patient", "x2") is None
        # One write per unit of work works, with its version precondition.
        v, doc = make_version("Patient", "one", 1, ts(1))
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
        with pytest.raises(VersionConflict):
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=NEW)
        got = await store.read("Patient", "one")
        assert got is not None and got.body == v.body
        assert await store.vread("Patient", "one", 1) is not None
    finally:
        await store.close()


# -- reachability ----------------------------------------------------------------------------------

async def test_unreachable_database_is_transient_until_it_comes_up() -> None:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("starts its own SecantusDB")
    server = SecantusServer()
    store = MongoStore(server.url + "late?serverSelectionTimeoutMS=300")
    await store.open()  # does not fail
    try:
        with pytest.raises(FhirError) as info:
            await store.read("Patient", "p1")
        assert info.value.category is Category.TRANSIENT and info.value.status == 503
        assert int(info.value.headers["Retry-After"]) > 0
        server.start()
        assert await store.read("Patient", "p1") is None
        assert store.supports_transactions is True
    finally:
        await store.close()
        server.cleanup()
