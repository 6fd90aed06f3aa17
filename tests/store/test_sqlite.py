"""The store contract for the embedded SQLite adapter on a real file, plus SQLite-only checks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest

from fhir_exchange.store.port import NEW, ResourceStore, VersionConflict
from fhir_exchange.store.sqlite import SqliteStore
from tests.store.contract import StoreContract, make_version, ts


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
