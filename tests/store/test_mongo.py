"""The store contract for the MongoDB adapter, on a real wire-protocol server (no mocks).

The server is ``MONGODB_URL`` when set, otherwise a SecantusDB process started by the session fixture
(tests/mongo_server.py); each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import MongoClient

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import mongo_search
from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import (
    ANY,
    NEW,
    Grant,
    HistoryQuery,
    MessageRecord,
    Record,
    ResourceStore,
    ResourceVersion,
    VersionConflict,
)
from tests.mongo_server import SecantusServer, fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.contract import SYS, StoreContract, by_identifier, make_version, query, ts


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
        assert {"by_kind", "by_expiry"} <= set(db["records"].index_information())


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


async def test_standalone_writes_messages_grants_and_the_change_feed(standalone_url: str) -> None:
    store = MongoStore(standalone_url.rsplit("/", 1)[0] + "/standalone_feed", indexer=StoreContract().indexer)
    await store.open()
    try:
        assert store.supports_transactions is False
        v, doc = make_version("Patient", "s1", 1, ts(1), owner="a")
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
        rec = MessageRecord("urn:m|1", "d", b"{}")
        async with store.transaction() as uow:
            assert await uow.read_message(rec.key) is None
            await uow.write_message(rec)
            assert await uow.read_message(rec.key) == rec
        with pytest.raises(VersionConflict):
            async with store.transaction() as uow:
                await uow.write_message(rec)
        a = Visibility(frozenset({"a"}), frozenset(), ts(9))
        async with store.transaction() as uow:
            await uow.replace_grants("b1", [Grant("a", "Patient", "other")])
            assert await uow.granted(a, "Patient", "other")  # its own pending replacement
        assert await store.granted(a, "Patient", "other")
        with pytest.raises(FhirError) as info:  # a second write of any kind: not atomic here, refused
            async with store.transaction() as uow:
                await uow.replace_grants("b1", [])
                await uow.write_message(MessageRecord("urn:m|2", "d", b"{}"))
        assert info.value.category is Category.NOT_IMPLEMENTED
        assert await store.granted(a, "Patient", "other")
        async with store.transaction() as uow:
            await uow.delete(ResourceVersion("Patient", "s1", 2, ts(2), True, b"", "DELETE", "a"), expected_version=1)
        with pytest.raises(VersionConflict):  # a failed write leaves a void seq, never a record
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=ANY)
        feed = await store.changes(0)
        assert [(c.id, c.version_id, c.deleted) for c in feed] == [("s1", 1, False), ("s1", 2, True)]
        found = await store.search(dataclasses.replace(by_identifier("Patient", "x"), visibility=a))
        assert found.total == 0
        # Internal records are single-document writes: a standalone server has them all.
        assert await store.put_record(Record("jti", "c|j", b"", ts(10)), if_absent=True, now=ts(1))
        assert not await store.put_record(Record("jti", "c|j", b"", ts(10)), if_absent=True, now=ts(2))
        claims = await asyncio.gather(*(store.put_record(Record("jti", "c|k", b"", ts(10)), if_absent=True, now=ts(1))
                                        for _ in range(10)))
        assert claims.count(True) == 1
        assert await store.put_record(Record("jti", "c|j", b"again", ts(20)), if_absent=True, now=ts(10))
        assert [r.key for r in await store.list_records("jti", now=ts(10))] == ["c|j"]
        assert await store.purge_records(ts(10)) == 1  # c|k
        assert await store.delete_record("jti", "c|j") and await store.list_records("jti", now=ts(1)) == []
    finally:
        await store.close()


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
        # The driver rediscovers the server on its own heartbeat schedule (at most every 500 ms
        # once a request is waiting), so each request until then is still a 503, never another error.
        deadline = time.monotonic() + 30
        while True:
            try:
                assert await store.read("Patient", "p1") is None
                break
            except FhirError as again:
                assert again.category is Category.TRANSIENT and again.status == 503
                assert time.monotonic() < deadline, "the store did not recover once the database came up"
                await asyncio.sleep(0.2)
        assert store.supports_transactions is True
    finally:
        await store.close()
        server.cleanup()


# -- change feed: allocation outside the transaction, gaps ------------------------------------------

async def _put(store: MongoStore, id: str, n: int) -> None:
    v, doc = make_version("Patient", id, 1, ts(n))
    async with store.transaction() as uow:
        await uow.put(v, doc, expected_version=NEW)


async def test_change_feed_withholds_records_behind_a_gap_until_the_bound_passes(fresh_db_url: str) -> None:  # noqa: F811
    store = MongoStore(fresh_db_url, indexer=StoreContract().indexer, resource_types=("Patient",), change_gap_s=1.0)
    await store.open()
    try:
        await _put(store, "p1", 1)
        # A unit of work that allocated its seq and never committed (its process died before commitTransaction).
        (lost,), _at = await store._allocate(1)
        await _put(store, "p2", 2)
        assert [c.id for c in await store.changes(0)] == ["p1"]
        assert await store.changes(lost - 1) == []
        assert await store.last_change() == lost - 1  # a reader starting now must not skip the gap
        await asyncio.sleep(1.3)  # the gap's transaction can no longer commit
        feed = await store.changes(0)
        assert [c.id for c in feed] == ["p1", "p2"] and feed[1].seq == lost + 1
        assert await store.last_change() == lost + 1
    finally:
        await store.close()


async def test_a_failed_commit_voids_its_seqs_and_void_records_are_never_returned(
        fresh_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from pymongo.asynchronous.client_session import AsyncClientSession
    from pymongo.errors import OperationFailure

    store = MongoStore(fresh_db_url, resource_types=("Patient",), change_gap_s=3600)
    await store.open()
    try:
        await _put(store, "p1", 1)

        async def refuse(self: AsyncClientSession) -> None:
            raise OperationFailure("injected commit failure", code=8000)

        with monkeypatch.context() as m:
            m.setattr(AsyncClientSession, "commit_transaction", refuse)
            with pytest.raises(FhirError):
                async with store.transaction() as uow:
                    for id in ("x1", "x2"):
                        v, doc = make_version("Patient", id, 1, ts(2))
                        await uow.put(v, doc, expected_version=NEW)
        assert await store.read("Patient", "x1") is None
        await _put(store, "p2", 3)
        # No waiting: the void records close the gap at once (the bound here is an hour).
        feed = await store.changes(0)
        assert [c.id for c in feed] == ["p1", "p2"]
        assert feed[1].seq == feed[0].seq + 3  # two seqs were allocated and voided in between
        assert await store.changes(feed[0].seq, limit=1) == [feed[1]]
        assert await store.last_change() == feed[1].seq
    finally:
        await store.close()


async def test_a_later_commit_is_withheld_until_an_earlier_allocation_commits(
        fresh_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Seqs are allocated in one order and committed in another: the reader never moves past a seq that
    can still appear, so it sees both, in seq order, once the slower one commits."""
    from pymongo.asynchronous.client_session import AsyncClientSession

    store = MongoStore(fresh_db_url, resource_types=("Patient",))
    await store.open()
    try:
        await _put(store, "p0", 0)
        start = await store.last_change()
        original = AsyncClientSession.commit_transaction
        release = asyncio.Event()
        held = asyncio.Event()

        async def slow_first(self: AsyncClientSession) -> None:
            if not held.is_set():
                held.set()
                await release.wait()
            await original(self)

        monkeypatch.setattr(AsyncClientSession, "commit_transaction", slow_first)
        slow = asyncio.create_task(_put(store, "slow", 1))
        await held.wait()  # allocated, not committed
        await _put(store, "fast", 2)
        assert (await store.read("Patient", "fast")) is not None
        assert await store.changes(start) == []
        assert await store.last_change() == start
        release.set()
        await slow
        feed = await store.changes(start)
        assert [c.id for c in feed] == ["slow", "fast"]
        assert await store.last_change() == feed[-1].seq
    finally:
        await store.close()


async def test_import_and_export_keep_owners(store: MongoStore) -> None:
    v1, _ = make_version("Patient", "m1", 1, ts(1), owner="org-a")
    v2, _ = make_version("Patient", "m1", 2, ts(2), owner="org-b")
    gone = ResourceVersion("Patient", "m2", 1, ts(3), True, b"", "DELETE", "org-c")
    assert await store.import_versions([v1, v2, gone]) == 3
    current = await store.read("Patient", "m1")
    assert current is not None and current.owner == "org-b"
    assert [(v.id, v.version_id, v.owner) async for v in store.all_versions()] == [
        ("m1", 1, "org-a"), ("m1", 2, "org-b"), ("m2", 1, "org-c")]


# -- readable types in the compiled filters ----------------------------------------------------------

async def test_readable_types_change_no_filter_when_they_cover_the_searched_types() -> None:
    """``types`` None and ``types`` covering the type compile to the same filters; an unreadable type's
    is FALSE without staging anything (its grants, chain targets or _has sources)."""
    staged: list[tuple[str, dict[str, Any]]] = []

    async def find(type: str, filt: dict[str, Any], projection: dict[str, Any]) -> list[dict[str, Any]]:
        staged.append((type, filt))
        return [{"_id": "p1", "_s": {"ref": ["subject|Patient|p1"]}}]

    async def granted(vis: Visibility, type: str | None) -> list[tuple[str, str]]:
        staged.append((f"grants {type}", {}))
        return [("Observation", "ob1"), ("Patient", "p9")] if type is None else [(type, "g1")]

    vis = Visibility(frozenset({"a"}), frozenset({"Organization"}), ts(30))
    covering = dataclasses.replace(vis, types=frozenset({"Observation", "Patient", "Organization"}))
    for type, pairs in [("Observation", ()), ("Patient", (("identifier", f"{SYS}|1"),)),
                        ("Observation", (("subject:Patient.identifier", f"{SYS}|1"),)),
                        ("Patient", (("_has:Observation:subject:identifier", f"{SYS}|1"),)), ("Organization", ())]:
        q = query(type, *pairs)
        filters = []
        for v in (vis, covering):
            staged.clear()
            filters.append((await mongo_search.Compiler(find, v, granted).filter(q.params, type), list(staged)))
        assert filters[0] == filters[1]
    assert await mongo_search.history_clause(vis, "Patient", granted) == await mongo_search.history_clause(
        covering, "Patient", granted)
    assert await mongo_search.history_clause(vis, None, granted) == {  # as before readable types existed
        "$or": [{"own": {"$in": ["a"]}}, {"t": {"$in": ["Organization"]}}, {"t": "Observation", "i": {"$in": ["ob1"]}},
                {"t": "Patient", "i": {"$in": ["p9"]}}]}
    obs = dataclasses.replace(vis, types=frozenset({"Observation"}))
    staged.clear()
    assert await mongo_search.Compiler(find, obs, granted).filter([], "Patient") is mongo_search.FALSE
    chain = query("Observation", ("subject:Patient.identifier", f"{SYS}|1")).params
    assert await mongo_search.Compiler(find, obs, granted).filter(chain, "Observation") is mongo_search.FALSE
    assert staged == [("grants Observation", {})]  # nothing staged on Patient, not even its grants
    assert await mongo_search.history_clause(obs, "Patient", granted) is mongo_search.FALSE
    assert await mongo_search.history_clause(obs, None, granted) == {  # Patient p9's grant left out
        "t": {"$in": ["Observation"]},
        "$or": [{"own": {"$in": ["a"]}}, {"t": {"$in": ["Organization"]}}, {"t": "Observation", "i": {"$in": ["ob1"]}}]}
    assert await mongo_search.history_clause(dataclasses.replace(vis, types=frozenset()), None, granted) is (
        mongo_search.FALSE)
