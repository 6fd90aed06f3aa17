"""Group commit in the SQLite store (store/group_commit.py): units of work that arrive together share one
transaction and one COMMIT; each fails alone, is answered only after the COMMIT holding its writes, and
sees every earlier unit of its group. Real files, real concurrency on one event loop."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.store.port import NEW, VersionConflict
from fhir_exchange.store.sqlite import SqliteStore
from tests.store.contract import StoreContract, make_version, ts


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "fhir.db", indexer=StoreContract().indexer)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def count_commits(store: SqliteStore) -> list[str]:
    """The COMMITs the writer connection runs (SQLite's statement trace, not a stand-in)."""
    seen: list[str] = []
    store._writer_conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


async def create(store: SqliteStore, id: str, *, fail: bool = False) -> None:
    async with store.transaction() as uow:
        v, doc = make_version("Patient", id, 1, ts(1))
        await uow.put(v, doc, expected_version=NEW)
        if fail:
            raise RuntimeError(f"unit {id} gives up")


async def test_concurrent_units_share_commits_and_each_fails_alone(store: SqliteStore) -> None:
    await create(store, "taken")
    commits = count_commits(store)

    async def conflicting() -> None:  # a version precondition that fails inside the shared transaction
        async with store.transaction() as uow:
            v, doc = make_version("Patient", "taken", 1, ts(2))
            await uow.put(v, doc, expected_version=NEW)

    async def fails_after_a_read() -> None:  # a unit that reached the writer (its savepoint open), then raised
        async with store.transaction() as uow:
            v, doc = make_version("Patient", "read-then-fail", 1, ts(1))
            await uow.put(v, doc, expected_version=NEW)
            assert await uow.read("Patient", "read-then-fail") is not None
            raise RuntimeError("after a read")

    special = {5: lambda: create(store, "gives-up", fail=True), 9: conflicting, 13: fails_after_a_read}
    tasks = [special[i]() if i in special else create(store, f"p{i}") for i in range(20)]
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(results[5], RuntimeError)
    assert isinstance(results[9], VersionConflict)
    assert isinstance(results[13], RuntimeError)
    for i, r in enumerate(results):
        if i not in (5, 9, 13):
            assert r is None
            assert await store.read("Patient", f"p{i}") is not None
    assert await store.read("Patient", "gives-up") is None
    assert await store.read("Patient", "read-then-fail") is None
    assert (await store.read("Patient", "taken")) is not None
    assert 1 <= len(commits) <= 5, commits  # 20 units, a few COMMITs (one fsync each)


async def test_units_of_a_group_see_the_earlier_ones(store: SqliteStore) -> None:
    """Read-then-create of one id from 12 tasks: serialised, so exactly one creates and the others see it,
    though it is not committed yet when they look (same group)."""
    created: list[int] = []

    async def create_if_absent(n: int) -> None:
        async with store.transaction() as uow:
            if await uow.read("Patient", "once") is None:
                v, doc = make_version("Patient", "once", 1, ts(1), gender="other")
                await uow.put(v, doc, expected_version=NEW)
                created.append(n)

    await asyncio.gather(*(create_if_absent(n) for n in range(12)))
    assert len(created) == 1
    assert (await store.read("Patient", "once")) is not None


async def test_concurrent_updates_of_one_resource_get_consecutive_versions(store: SqliteStore) -> None:
    await create(store, "counter")

    async def bump(n: int) -> int:
        async with store.transaction() as uow:
            current = await uow.read("Patient", "counter")
            assert current is not None
            v, doc = make_version("Patient", "counter", current.version_id + 1, ts(2 + n), birthDate=f"{1900 + n}")
            await uow.put(v, doc, expected_version=current.version_id)
            return current.version_id + 1

    versions = await asyncio.gather(*(bump(n) for n in range(15)))
    assert sorted(versions) == list(range(2, 17))
    got = await store.read("Patient", "counter")
    assert got is not None and got.version_id == 16
    changes = [c for c in await store.changes(0) if c.id == "counter"]
    assert [c.version_id for c in changes] == list(range(1, 17))  # the change feed in version order


async def test_a_failed_commit_fails_every_unit_of_its_group_and_only_those(store: SqliteStore) -> None:
    """A COMMIT that fails (a deferred foreign key, checked by SQLite at COMMIT) must fail every unit
    of its group: a unit is answered only after the COMMIT holding its writes."""
    conn = store._writer_conn
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE poison(rid INTEGER REFERENCES resource(rid) DEFERRABLE INITIALLY DEFERRED)")
    conn.execute("CREATE TRIGGER poisoned AFTER INSERT ON resource WHEN NEW.id = 'poison' "
                 "BEGIN INSERT INTO poison VALUES (-1); END")
    results = await asyncio.gather(*(create(store, f"q{i}") for i in range(10)), create(store, "poison"),
                                   *(create(store, f"r{i}") for i in range(10)), return_exceptions=True)
    ids = [f"q{i}" for i in range(10)] + ["poison"] + [f"r{i}" for i in range(10)]
    assert isinstance(results[10], FhirError)
    failed = 0
    for id, r in zip(ids, results, strict=True):
        stored = await store.read("Patient", id)
        if r is None:
            assert stored is not None, id  # acknowledged: durable
        else:
            assert isinstance(r, FhirError) and stored is None, id  # refused: nothing written
            failed += 1
    assert failed >= 2  # the poison's group had other units, and they failed with it
    await create(store, "after")  # the store goes on
    assert await store.read("Patient", "after") is not None


async def test_a_transaction_lost_to_a_full_disk_fails_its_group_with_a_transient_error(store: SqliteStore) -> None:
    """SQLITE_FULL rolls the whole transaction back: the units before the failing one in the group lost
    their writes too, and must hear it (503 transient), not a success."""
    conn = store._writer_conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + 40}")

    async def big() -> None:
        async with store.transaction() as uow:
            v, doc = make_version("Patient", "big", 1, ts(1), text={"status": "generated", "div": "x" * 2_000_000})
            await uow.put(v, doc, expected_version=NEW)

    results = await asyncio.gather(*(create(store, f"s{i}") for i in range(6)), big(), return_exceptions=True)
    assert isinstance(results[6], FhirError) and results[6].category is Category.TRANSIENT
    for i, r in enumerate(results[:6]):
        stored = await store.read("Patient", f"s{i}")
        assert (r is None) == (stored is not None), (i, r)
        if r is not None:
            assert isinstance(r, FhirError) and r.category is Category.TRANSIENT
    conn.execute("PRAGMA max_page_count=1073741823")
    await create(store, "after")
    assert await store.read("Patient", "after") is not None


async def test_cancelled_units_never_stall_the_others(store: SqliteStore) -> None:
    """Units cancelled at random moments (waiting for the lock, inside, waiting for the COMMIT): every unit
    that returned is stored, none hangs, and the store goes on."""
    rng = random.Random(7)
    tasks = [asyncio.create_task(create(store, f"c{i}")) for i in range(40)]
    for _ in range(12):
        await asyncio.sleep(rng.random() / 500)
        rng.choice(tasks).cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    for i, r in enumerate(results):
        if r is None:
            assert await store.read("Patient", f"c{i}") is not None
        else:
            assert isinstance(r, asyncio.CancelledError)
    await create(store, "after")
    assert await store.read("Patient", "after") is not None


async def test_writes_are_durable_on_return(tmp_path: Path) -> None:
    """Acknowledged means committed: another connection (another process's view) sees every returned write."""
    s = SqliteStore(tmp_path / "fhir.db", indexer=StoreContract().indexer)
    await s.open()
    try:
        await asyncio.gather(*(create(s, f"d{i}") for i in range(16)))
        other = sqlite3.connect(tmp_path / "fhir.db")
        try:
            assert other.execute("SELECT count(*) FROM resource WHERE id LIKE 'd%'").fetchone()[0] == 16
        finally:
            other.close()
    finally:
        await s.close()
