"""The store contract for the embedded SQLite adapter on a real file, plus SQLite-only checks."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import orjson
import pytest

from fhir_exchange.errors import FhirError
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.port import NEW, Grant, HistoryQuery, MessageRecord, Record, ResourceStore, VersionConflict
from fhir_exchange.store.sqlite import SqliteStore
from tests.store.contract import SYS, VIS_A, StoreContract, by_identifier, make_version, query, resource, ts


class TestSqliteStore(StoreContract):
    async def make_store(self, tmp_path: Path) -> ResourceStore:
        return SqliteStore(tmp_path / "store" / "fhir.db", indexer=self.indexer)


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    first = SqliteStore(path)
    await first.open()
    v, doc = make_version("Patient", "p1", 1, ts(1), gender="female")
    async with first.transaction() as uow:
        await uow.put(v, doc, expected_version=NEW)
    await first.close()
    second = SqliteStore(path)
    await second.open()
    try:
        got = await second.read("Patient", "p1")
        assert got is not None and got.body == v.body
    finally:
        await second.close()


async def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_two_store_instances_on_one_file_never_both_win(tmp_path: Path) -> None:
    """Two processes' worth of writers (separate connections and locks) on one version."""
    path = tmp_path / "fhir.db"
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        v1, doc1 = make_version("Patient", "p1", 1, ts(1))
        async with a.transaction() as uow:
            await uow.put(v1, doc1, expected_version=NEW)

        async def write(store: SqliteStore, n: int) -> bool:
            v, doc = make_version("Patient", "p1", 2, ts(2), name=[{"text": str(n)}])
            try:
                async with store.transaction() as uow:
                    await uow.put(v, doc, expected_version=1)
            except VersionConflict:
                return False
            return True

        results = await asyncio.gather(*(write(a if n % 2 else b, n) for n in range(8)))
        assert results.count(True) == 1
        got = await a.read("Patient", "p1")
        assert got is not None and got.version_id == 2
        winner = results.index(True)
        assert orjson.loads(got.body)["name"][0]["text"] == str(winner)
    finally:
        await a.close()
        await b.close()


async def test_from_url_with_an_absolute_path(tmp_path: Path) -> None:
    # SQLAlchemy's convention: sqlite:/// + path, so an absolute path gives four slashes.
    store = SqliteStore.from_url(f"sqlite:///{tmp_path}/x.db")
    await store.open()
    await store.close()
    assert (tmp_path / "x.db").exists()


async def test_cancelled_while_begin_waits_for_the_file_lock(tmp_path: Path) -> None:
    """The task is cancelled while BEGIN IMMEDIATE blocks in the writer thread (another process holds the
    write lock); the BEGIN then succeeds after all. The writer connection must not be left inside that
    transaction, or every later write would fail."""
    path = tmp_path / "fhir.db"
    store = SqliteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def doomed() -> None:
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "doomed", 1, ts(1))
                await uow.put(v, doc, expected_version=NEW)

        task = asyncio.create_task(doomed())
        await asyncio.sleep(0.3)  # the writer thread is now blocked in BEGIN IMMEDIATE
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other.execute("COMMIT")  # the blocked BEGIN now succeeds in the writer thread
        await asyncio.sleep(0.2)
        v, doc = make_version("Patient", "later", 1, ts(2))
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
        assert await store.read("Patient", "later") is not None
        assert await store.read("Patient", "doomed") is None
    finally:
        other.close()
        await store.close()


async def test_a_database_made_before_owners_grants_messages_and_the_change_feed_is_upgraded(tmp_path: Path) -> None:
    """The schema as it was before owners: opening adds the columns and tables once, and keeps the data."""
    path = tmp_path / "old.db"
    body = orjson.dumps(resource("Patient", "old", 1, ts(1), identifier=[{"system": SYS, "value": "old"}]))
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE resource (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL,
                version INTEGER NOT NULL, last_updated TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
                body BLOB NOT NULL, UNIQUE (type, id));
            CREATE INDEX resource_type_lu ON resource(type, last_updated);
            CREATE INDEX resource_rid_type ON resource(rid, type, deleted);
            CREATE TABLE history (type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
                last_updated TEXT NOT NULL, deleted INTEGER NOT NULL, method TEXT NOT NULL, body BLOB NOT NULL,
                PRIMARY KEY (type, id, version)) WITHOUT ROWID;
            CREATE INDEX history_lu ON history(last_updated);
            CREATE INDEX history_type_lu ON history(type, last_updated);
            CREATE TABLE search_token (rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT, text TEXT,
                grp INTEGER);
        """)
        conn.execute("INSERT INTO resource(rid, type, id, version, last_updated, deleted, body) "
                     "VALUES (1, 'Patient', 'old', 1, ?, 0, ?)", (ts(1), body))
        conn.execute("INSERT INTO history VALUES ('Patient', 'old', 1, ?, 0, 'POST', ?)", (ts(1), body))
        conn.execute("INSERT INTO search_token VALUES (1, 'Patient.identifier', ?, 'old', NULL, NULL)", (SYS,))
    contract = StoreContract()
    for _ in range(2):  # the second open finds everything in place
        store = SqliteStore(path, indexer=contract.indexer)
        await store.open()
        try:
            old = await store.read("Patient", "old")
            assert old is not None and old.body == body and old.owner is None
            first = await store.vread("Patient", "old", 1)
            assert first is not None and first.owner is None and first.method == "POST"
            vis = Visibility(frozenset({"a"}), frozenset(), ts(50))
            assert (await store.search(dataclasses.replace(by_identifier("Patient", "old"), visibility=vis))).total == 0
            assert [m.id for m in (await store.search(by_identifier("Patient", "old"))).matches] == ["old"]
            assert not await store.granted(vis, "Patient", "old")
        finally:
            await store.close()
    store = SqliteStore(path, indexer=contract.indexer)
    await store.open()
    try:
        assert await store.last_change() == 0  # the feed starts with the upgrade
        v, doc = make_version("Patient", "old", 2, ts(2), owner="a", identifier=[{"system": SYS, "value": "old"}])
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=1)
            await uow.replace_grants("b1", [Grant("b", "Patient", "old")])
            await uow.write_message(MessageRecord("m", "d", b"{}"))
        vis = Visibility(frozenset({"a"}), frozenset(), ts(50))
        found = await store.search(dataclasses.replace(by_identifier("Patient", "old"), visibility=vis))
        assert [(m.id, m.version_id, m.owner) for m in found.matches] == [("old", 2, "a")]
        assert [(c.id, c.version_id) for c in await store.changes(0)] == [("old", 2)]
        assert await store.granted(Visibility(frozenset({"b"}), frozenset(), ts(50)), "Patient", "old")
        assert await store.put_record(Record("client", "c1", b"{}"), if_absent=True, now=ts(50))
        assert await store.get_record("client", "c1", now=ts(50)) == Record("client", "c1", b"{}")
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "resource_rid_vis" in indexes and "resource_rid_type" not in indexes
        assert [r[1] for r in conn.execute("PRAGMA table_info(resource)")].count("owner") == 1
        assert [r[1] for r in conn.execute("PRAGMA table_info(history)")].count("owner") == 1


async def test_change_seqs_follow_commit_order_across_two_store_instances(tmp_path: Path) -> None:
    """Two processes' worth of writers on one file: the feed is still one sequence, each write once."""
    path = tmp_path / "fhir.db"
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        async def write(store: SqliteStore, n: int) -> None:
            v, doc = make_version("Patient", f"p{n}", 1, ts(n))
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=NEW)

        await asyncio.gather(*(write(a if n % 2 else b, n) for n in range(10)))
        feed = await a.changes(0)
        assert sorted(c.id for c in feed) == sorted(f"p{n}" for n in range(10))
        assert [c.seq for c in feed] == list(range(1, 11))
        assert await b.last_change() == 10
    finally:
        await a.close()
        await b.close()


# -- internal records ------------------------------------------------------------------------------

async def test_concurrent_if_absent_records_across_two_store_instances(tmp_path: Path) -> None:
    """Two processes' worth of stores on one file claim one client assertion id: exactly one is first."""
    path = tmp_path / "fhir.db"
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        async def claim(n: int) -> bool:
            store = a if n % 2 else b
            return await store.put_record(Record("jti", "c1|j1", str(n).encode(), ts(30)), if_absent=True, now=ts(1))

        results = await asyncio.gather(*(claim(n) for n in range(10)))
        assert results.count(True) == 1
        got = await b.get_record("jti", "c1|j1", now=ts(1))
        assert got is not None and got.value == str(results.index(True)).encode()
        assert await a.list_records("jti", now=ts(1)) == [got]
    finally:
        await a.close()
        await b.close()


async def test_a_record_written_while_a_unit_of_work_is_open_is_not_rolled_back_with_it(tmp_path: Path) -> None:
    """The writer connection is inside the unit of work's transaction between its hops: a record write
    waits for the unit of work to end instead of joining (and rolling back with) it."""
    store = SqliteStore(tmp_path / "fhir.db", indexer=StoreContract().indexer)
    await store.open()
    try:
        begun, release = asyncio.Event(), asyncio.Event()

        async def unit() -> None:
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "p1", 1, ts(1))
                await uow.put(v, doc, expected_version=NEW)
                await uow.read("Patient", "p1")  # the BEGIN and the put have run: the transaction is open
                begun.set()
                await release.wait()
                raise RuntimeError("rolled back")

        task = asyncio.create_task(unit())
        await begun.wait()
        write = asyncio.create_task(store.put_record(Record("client", "c1", b"{}")))
        await asyncio.sleep(0.05)
        assert not write.done()  # behind the unit of work
        release.set()
        with pytest.raises(RuntimeError):
            await task
        assert await write
        assert await store.get_record("client", "c1", now=ts(1)) == Record("client", "c1", b"{}")
        assert await store.read("Patient", "p1") is None
        # Inside its own unit of work a task is refused at once rather than waiting for itself forever.
        async with store.transaction() as uow:
            await uow.read("Patient", "p1")
            with pytest.raises(FhirError):
                await asyncio.wait_for(store.put_record(Record("client", "c2", b"{}")), 5)
            with pytest.raises(FhirError):
                await asyncio.wait_for(store.purge_records(ts(1)), 5)
            assert await store.get_record("client", "c1", now=ts(1)) is not None  # reads are fine
        assert await store.put_record(Record("client", "c2", b"{}"))  # and after it
    finally:
        await store.close()


# -- readable types in the compiled SQL ------------------------------------------------------------

def test_readable_types_change_no_sql_when_they_cover_the_searched_types() -> None:
    """``types`` None and ``types`` covering every searched type compile to the same SQL; otherwise a
    type test, "0" for an unreadable searched type."""
    covering = dataclasses.replace(VIS_A, types=frozenset({"Observation", "Patient", "Encounter"}))
    for type, pairs in [("Observation", ()), ("Patient", (("identifier", f"{SYS}|1"),)),
                        ("Observation", (("subject:Patient.identifier", f"{SYS}|1"), ("_sort", "date"))),
                        ("Patient", (("_has:Observation:subject:identifier", f"{SYS}|1"),))]:
        q = query(type, *pairs, visibility=VIS_A)
        assert search_sql.where_clause(q) == search_sql.where_clause(dataclasses.replace(q, visibility=covering))
        assert search_sql.index_source(q) == search_sql.index_source(dataclasses.replace(q, visibility=covering))
    assert search_sql.visible(VIS_A, "r", ["Organization"]) is None  # shared: no predicate
    assert search_sql.visible(covering, "r", ["Organization"]) == ("0", [])  # shared, but not readable
    assert search_sql.visible(dataclasses.replace(VIS_A, types=frozenset()), "r", ["Patient"]) == ("0", [])
    obs = dataclasses.replace(VIS_A, types=frozenset({"Observation"}))
    sql, args = search_sql.where_clause(query(None, ("_type", "Patient,Observation"), visibility=obs))
    assert "r.type IN (?)" in sql and "Observation" in args
    # Unknown types (system history): the readable ones are listed.
    cond = search_sql.visible(obs, "h", None)
    assert cond is not None and cond[0].startswith("(h.type IN (?) AND ") and cond[1][0] == "Observation"
    assert search_sql.visible(dataclasses.replace(VIS_A, types=frozenset({"Organization"})), "h", None) == (
        "h.type IN (?)", ["Organization"])  # readable and shared: nothing else to test


async def test_history_at_instance_level_with_readable_types(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fhir.db", indexer=StoreContract().indexer)
    await store.open()
    try:
        v, doc = make_version("Patient", "p1", 1, ts(1), owner="a")
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
        for types, total in ((None, 1), (frozenset({"Patient"}), 1), (frozenset({"Observation"}), 0)):
            vis = dataclasses.replace(VIS_A, types=types)
            assert (await store.history(HistoryQuery("Patient", "p1", visibility=vis))).total == total
    finally:
        await store.close()
