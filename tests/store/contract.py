"""The store contract: one abstract test class that every :class:`ResourceStore` adapter passes.

Usage (eventsourcing style)::

    class TestMyStore(StoreContract):
        async def make_store(self, tmp_path: Path) -> ResourceStore:
            return MyStore(..., indexer=self.indexer)

``make_store`` returns an *unopened* store wired with :attr:`StoreContract.indexer` (the contract's own
indexer, so that search and reindex can be checked without the search module); the contract opens and
closes it. Each call must return a store with no data in it (a fresh file, database or collection set).

What the contract pins down (store/port.py):

- put / read / vread, bodies returned byte for byte as stored, the writing method kept per version;
- ``expected_version``: NEW (must not exist, or exist only as deleted), ANY, a version id (else
  :class:`VersionConflict`, HTTP 409), and that a version id is never written twice;
- delete markers (deleted current version, empty body; earlier versions still readable);
- history at instance, type and system level, newest first, with since / at / till / count / offset
  and the total;
- the unit of work: rollback on exception (nothing visible, not even history), own writes visible
  inside it (read and search), invisible outside until commit;
- concurrent writers on one version: exactly one wins, the others get VersionConflict;
- count and reindex.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import SearchQuery
from fhir_exchange.store.port import (
    ANY,
    NEW,
    HistoryQuery,
    IndexEntry,
    ResourceStore,
    ResourceVersion,
    VersionConflict,
)
from tests.conftest import CACHE_DIR

SYS = "urn:contract"


def ts(second: int) -> str:
    """A FHIR instant ``second`` seconds after a fixed origin (sortable as text)."""
    minute, sec = divmod(second, 60)
    return f"2024-01-01T00:{minute:02d}:{sec:02d}.000Z"


def resource(type: str, id: str, version: int, when: str, /, **extra: Any) -> dict[str, Any]:
    return {"resourceType": type, "id": id, "meta": {"versionId": str(version), "lastUpdated": when}, **extra}


def make_version(type: str, id: str, version: int, when: str, /, *, method: str = "PUT",
                 **extra: Any) -> tuple[ResourceVersion, dict[str, Any]]:
    doc = resource(type, id, version, when, **extra)
    return ResourceVersion(type, id, version, when, False, orjson.dumps(doc), method), doc


def marker(type: str, id: str, version: int, when: str) -> ResourceVersion:
    return ResourceVersion(type, id, version, when, True, b"", "DELETE")


@functools.cache
def _definitions() -> Definitions:
    return Definitions.load(cache_dir=CACHE_DIR)


def by_identifier(type: str | None, value: str) -> SearchQuery:
    """``identifier=SYS|value``, built by the search module's own parser (so it follows the query model)."""
    return parse(_definitions(), type, [("identifier", f"{SYS}|{value}")], strict=True)


class StoreContract:
    """Abstract: subclasses supply :meth:`make_store`. Not collected by pytest (no ``Test`` prefix)."""

    # The contract's indexer indexes ``identifier`` (system|value) as a token; after
    # ``index_field`` is changed, ``reindex`` must pick up the new extraction.
    index_field: str = "identifier"

    def indexer(self, type: str, doc: dict[str, Any]) -> Sequence[IndexEntry]:
        out = []
        for ident in doc.get(self.index_field) or []:
            if isinstance(ident, dict) and ident.get("value"):
                out.append(IndexEntry("identifier", "token", system=ident.get("system"), code=ident["value"]))
        return out

    async def make_store(self, tmp_path: Path) -> ResourceStore:
        raise NotImplementedError("a StoreContract subclass supplies make_store")

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ResourceStore]:
        s = await self.make_store(tmp_path)
        await s.open()
        try:
            yield s
        finally:
            await s.close()

    # -- helpers --------------------------------------------------------------------------------

    async def put(self, store: ResourceStore, type: str, id: str, version: int, when: str, /, *,
                  expected: int | None = None, method: str = "PUT", **extra: Any) -> ResourceVersion:
        v, doc = make_version(type, id, version, when, method=method, **extra)
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=(version - 1 if version > 1 else NEW) if expected is None
                          else expected)
        return v

    async def delete(self, store: ResourceStore, type: str, id: str, version: int, when: str) -> ResourceVersion:
        v = marker(type, id, version, when)
        async with store.transaction() as uow:
            await uow.delete(v, expected_version=version - 1)
        return v

    # -- put / read / vread ---------------------------------------------------------------------

    async def test_read_unknown_is_none(self, store: ResourceStore) -> None:
        assert await store.read("Patient", "nope") is None
        assert await store.vread("Patient", "nope", 1) is None

    async def test_put_then_read_returns_the_stored_bytes(self, store: ResourceStore) -> None:
        v = await self.put(store, "Patient", "p1", 1, ts(1), method="POST", gender="female")
        got = await store.read("Patient", "p1")
        assert got is not None
        assert (got.type, got.id, got.version_id, got.last_updated, got.deleted) == ("Patient", "p1", 1, ts(1), False)
        assert got.body == v.body
        assert orjson.loads(got.body)["gender"] == "female"

    async def test_update_keeps_every_version_for_vread(self, store: ResourceStore) -> None:
        await self.put(store, "Observation", "o1", 1, ts(1), method="POST", status="preliminary")
        await self.put(store, "Observation", "o1", 2, ts(2), status="final")
        await self.put(store, "Observation", "o1", 3, ts(3), method="PATCH", status="amended")
        current = await store.read("Observation", "o1")
        assert current is not None and current.version_id == 3
        assert orjson.loads(current.body)["status"] == "amended"
        for n, status, method in ((1, "preliminary", "POST"), (2, "final", "PUT"), (3, "amended", "PATCH")):
            old = await store.vread("Observation", "o1", n)
            assert old is not None, n
            assert old.version_id == n and old.last_updated == ts(n) and not old.deleted
            assert orjson.loads(old.body)["status"] == status
            assert old.method == method
        assert await store.vread("Observation", "o1", 4) is None

    async def test_same_id_in_two_types_is_two_resources(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "x", 1, ts(1), gender="male")
        await self.put(store, "Group", "x", 1, ts(2), type="person", actual=True)
        p, g = await store.read("Patient", "x"), await store.read("Group", "x")
        assert p is not None and g is not None
        assert orjson.loads(p.body)["resourceType"] == "Patient"
        assert orjson.loads(g.body)["resourceType"] == "Group"

    # -- expected_version -------------------------------------------------------------------------

    async def test_new_on_existing_resource_conflicts(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        with pytest.raises(VersionConflict) as info:
            await self.put(store, "Patient", "p1", 2, ts(2), expected=NEW)
        assert info.value.category is Category.CONFLICT
        got = await store.read("Patient", "p1")
        assert got is not None and got.version_id == 1

    async def test_new_on_deleted_resource_recreates_it(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        await self.delete(store, "Patient", "p1", 2, ts(2))
        await self.put(store, "Patient", "p1", 3, ts(3), expected=NEW, gender="other")
        got = await store.read("Patient", "p1")
        assert got is not None and got.version_id == 3 and not got.deleted
        assert orjson.loads(got.body)["gender"] == "other"

    async def test_mismatched_expected_version_conflicts(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        await self.put(store, "Patient", "p1", 2, ts(2))
        with pytest.raises(VersionConflict):
            await self.put(store, "Patient", "p1", 3, ts(3), expected=1)
        with pytest.raises(VersionConflict):
            await self.put(store, "Patient", "p2", 2, ts(3), expected=1)  # p2 does not exist
        got = await store.read("Patient", "p1")
        assert got is not None and got.version_id == 2
        assert await store.read("Patient", "p2") is None

    async def test_any_skips_the_precondition(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1), expected=ANY)
        await self.put(store, "Patient", "p1", 2, ts(2), expected=ANY)
        got = await store.read("Patient", "p1")
        assert got is not None and got.version_id == 2

    async def test_a_version_id_is_never_written_twice(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        await self.put(store, "Patient", "p1", 2, ts(2))
        with pytest.raises(VersionConflict):
            await self.put(store, "Patient", "p1", 2, ts(3), expected=ANY, gender="male")
        v2 = await store.vread("Patient", "p1", 2)
        assert v2 is not None and "gender" not in orjson.loads(v2.body)

    async def test_delete_with_wrong_expected_version_conflicts(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        await self.put(store, "Patient", "p1", 2, ts(2))
        with pytest.raises(VersionConflict):
            async with store.transaction() as uow:
                await uow.delete(marker("Patient", "p1", 2, ts(3)), expected_version=1)
        got = await store.read("Patient", "p1")
        assert got is not None and not got.deleted and got.version_id == 2

    # -- delete markers -------------------------------------------------------------------------

    async def test_delete_writes_a_marker_and_keeps_old_versions(self, store: ResourceStore) -> None:
        v1 = await self.put(store, "Condition", "c1", 1, ts(1))
        await self.delete(store, "Condition", "c1", 2, ts(2))
        current = await store.read("Condition", "c1")
        assert current is not None
        assert current.deleted and current.version_id == 2 and current.last_updated == ts(2)
        assert current.body == b""
        old = await store.vread("Condition", "c1", 1)
        assert old is not None and old.body == v1.body and not old.deleted
        gone = await store.vread("Condition", "c1", 2)
        assert gone is not None and gone.deleted and gone.method == "DELETE"
        assert await store.count("Condition") == 0

    async def test_deleted_resources_are_not_found_by_search(self, store: ResourceStore) -> None:
        ident = [{"system": SYS, "value": "a"}]
        await self.put(store, "Patient", "p1", 1, ts(1), identifier=ident)
        assert [v.id for v in (await store.search(by_identifier("Patient", "a"))).matches] == ["p1"]
        await self.delete(store, "Patient", "p1", 2, ts(2))
        result = await store.search(by_identifier("Patient", "a"))
        assert result.matches == [] and result.total == 0

    # -- history --------------------------------------------------------------------------------

    async def _history_fixture(self, store: ResourceStore) -> None:
        # t1 Patient/a v1, t2 Patient/b v1, t3 Observation/o v1, t4 Patient/a v2, t5 Patient/b deleted,
        # t6 Observation/o v2
        await self.put(store, "Patient", "a", 1, ts(1), method="POST")
        await self.put(store, "Patient", "b", 1, ts(2), method="POST")
        await self.put(store, "Observation", "o", 1, ts(3), method="POST", status="final")
        await self.put(store, "Patient", "a", 2, ts(4))
        await self.delete(store, "Patient", "b", 2, ts(5))
        await self.put(store, "Observation", "o", 2, ts(6), status="amended")

    @staticmethod
    def keys(versions: Sequence[ResourceVersion]) -> list[tuple[str, str, int]]:
        return [(v.type, v.id, v.version_id) for v in versions]

    async def test_history_instance_newest_first(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery("Patient", "a"))
        assert self.keys(page.versions) == [("Patient", "a", 2), ("Patient", "a", 1)]
        assert page.total == 2
        assert [v.method for v in page.versions] == ["PUT", "POST"]

    async def test_history_instance_includes_the_delete_marker(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery("Patient", "b"))
        assert self.keys(page.versions) == [("Patient", "b", 2), ("Patient", "b", 1)]
        assert [v.deleted for v in page.versions] == [True, False]
        assert page.versions[0].method == "DELETE"

    async def test_history_type(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery("Patient"))
        assert self.keys(page.versions) == [("Patient", "b", 2), ("Patient", "a", 2), ("Patient", "b", 1),
                                            ("Patient", "a", 1)]
        assert page.total == 4

    async def test_history_system(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery())
        assert [v.last_updated for v in page.versions] == [ts(n) for n in (6, 5, 4, 3, 2, 1)]
        assert page.total == 6

    async def test_history_since_is_inclusive(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery(since=ts(4)))
        assert [v.last_updated for v in page.versions] == [ts(6), ts(5), ts(4)]
        assert page.total == 3
        page = await store.history(HistoryQuery("Patient", since=ts(4)))
        assert self.keys(page.versions) == [("Patient", "b", 2), ("Patient", "a", 2)]

    async def test_history_till_is_inclusive_and_pins_a_snapshot(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery(till=ts(3)))
        assert [v.last_updated for v in page.versions] == [ts(3), ts(2), ts(1)]
        assert page.total == 3
        page = await store.history(HistoryQuery(since=ts(2), till=ts(4)))
        assert [v.last_updated for v in page.versions] == [ts(4), ts(3), ts(2)]

    async def test_history_at_gives_the_versions_current_then(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        # At t4: Patient/a v2 (t4), Patient/b v1 (t2), Observation/o v1 (t3).
        page = await store.history(HistoryQuery(at=ts(4)))
        assert sorted(self.keys(page.versions)) == [("Observation", "o", 1), ("Patient", "a", 2),
                                                    ("Patient", "b", 1)]
        assert page.total == 3
        # At t1 only Patient/a existed; at t0 nothing.
        assert self.keys((await store.history(HistoryQuery(at=ts(1)))).versions) == [("Patient", "a", 1)]
        assert (await store.history(HistoryQuery(at=ts(0)))).versions == []
        inst = await store.history(HistoryQuery("Observation", "o", at=ts(5)))
        assert self.keys(inst.versions) == [("Observation", "o", 1)]

    async def test_history_count_and_offset_page_through_everything(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        seen: list[tuple[str, str, int]] = []
        offset = 0
        while True:
            page = await store.history(HistoryQuery(count=4, offset=offset))
            assert page.total == 6
            assert len(page.versions) <= 4
            if not page.versions:
                break
            seen += self.keys(page.versions)
            offset += 4
        assert offset == 8
        assert seen == self.keys((await store.history(HistoryQuery(count=100))).versions)
        assert len(set(seen)) == 6
        assert (await store.history(HistoryQuery(count=0))).versions == []
        assert (await store.history(HistoryQuery(count=0))).total == 6

    async def test_history_of_unknown_resource_is_empty(self, store: ResourceStore) -> None:
        await self._history_fixture(store)
        page = await store.history(HistoryQuery("Patient", "zzz"))
        assert page.versions == [] and page.total == 0

    # -- unit of work ---------------------------------------------------------------------------

    async def test_rollback_on_exception_leaves_nothing(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "keep", 1, ts(1))
        with pytest.raises(RuntimeError, match="boom"):
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "p1", 1, ts(2), identifier=[{"system": SYS, "value": "r"}])
                await uow.put(v, doc, expected_version=NEW)
                v2, doc2 = make_version("Patient", "keep", 2, ts(2))
                await uow.put(v2, doc2, expected_version=1)
                await uow.delete(marker("Patient", "keep", 3, ts(3)), expected_version=2)
                raise RuntimeError("boom")
        assert await store.read("Patient", "p1") is None
        keep = await store.read("Patient", "keep")
        assert keep is not None and keep.version_id == 1 and not keep.deleted
        assert await store.vread("Patient", "keep", 2) is None
        assert (await store.history(HistoryQuery())).total == 1
        assert await store.count() == 1
        assert (await store.search(by_identifier("Patient", "r"))).matches == []

    async def test_version_conflict_inside_uow_rolls_back_earlier_writes(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))
        with pytest.raises(VersionConflict):
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "p2", 1, ts(2))
                await uow.put(v, doc, expected_version=NEW)
                v3, doc3 = make_version("Patient", "p1", 2, ts(2))
                await uow.put(v3, doc3, expected_version=7)
        assert await store.read("Patient", "p2") is None
        assert await store.count() == 1

    async def test_own_writes_are_visible_inside_the_uow(self, store: ResourceStore) -> None:
        async with store.transaction() as uow:
            v, doc = make_version("Patient", "p1", 1, ts(1), identifier=[{"system": SYS, "value": "mine"}])
            await uow.put(v, doc, expected_version=NEW)
            inside = await uow.read("Patient", "p1")
            assert inside is not None and inside.body == v.body
            found = await uow.search(by_identifier("Patient", "mine"))
            assert [m.id for m in found.matches] == ["p1"]
            # Not committed yet: invisible outside.
            assert await store.read("Patient", "p1") is None
            await uow.delete(marker("Patient", "p1", 2, ts(2)), expected_version=1)
            after = await uow.read("Patient", "p1")
            assert after is not None and after.deleted
            assert (await uow.search(by_identifier("Patient", "mine"))).matches == []
        got = await store.read("Patient", "p1")
        assert got is not None and got.deleted and got.version_id == 2

    async def test_uow_read_of_unknown_is_none(self, store: ResourceStore) -> None:
        async with store.transaction() as uow:
            assert await uow.read("Patient", "ghost") is None

    async def test_a_store_is_usable_after_a_rollback(self, store: ResourceStore) -> None:
        with pytest.raises(ValueError):
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "p1", 1, ts(1))
                await uow.put(v, doc, expected_version=NEW)
                raise ValueError("x")
        await self.put(store, "Patient", "p1", 1, ts(2))
        got = await store.read("Patient", "p1")
        assert got is not None and got.last_updated == ts(2)

    # -- concurrency ----------------------------------------------------------------------------

    async def test_concurrent_writers_on_one_version_exactly_one_wins(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1))

        async def writer(n: int) -> str:
            v, doc = make_version("Patient", "p1", 2, ts(2), gender=["male", "female", "other", "unknown"][n % 4],
                                  name=[{"text": f"writer {n}"}])
            try:
                async with store.transaction() as uow:
                    await uow.put(v, doc, expected_version=1)
            except VersionConflict:
                return "lost"
            return f"writer {n}"

        results = await asyncio.gather(*(writer(n) for n in range(12)))
        winners = [r for r in results if r != "lost"]
        assert len(winners) == 1
        got = await store.read("Patient", "p1")
        assert got is not None and got.version_id == 2
        assert orjson.loads(got.body)["name"][0]["text"] == winners[0]
        assert (await store.history(HistoryQuery("Patient", "p1"))).total == 2

    async def test_concurrent_creates_of_one_id_exactly_one_wins(self, store: ResourceStore) -> None:
        async def creator(n: int) -> bool:
            v, doc = make_version("Patient", "same", 1, ts(1), name=[{"text": str(n)}])
            try:
                async with store.transaction() as uow:
                    await uow.put(v, doc, expected_version=NEW)
            except VersionConflict:
                return False
            return True

        results = await asyncio.gather(*(creator(n) for n in range(10)))
        assert results.count(True) == 1
        assert (await store.history(HistoryQuery("Patient", "same"))).total == 1

    async def test_concurrent_writers_on_different_resources_all_win(self, store: ResourceStore) -> None:
        await asyncio.gather(*(self.put(store, "Patient", f"p{n}", 1, ts(n)) for n in range(20)))
        assert await store.count("Patient") == 20

    # -- count / reindex / search ----------------------------------------------------------------

    async def test_count_per_type_and_total(self, store: ResourceStore) -> None:
        assert await store.count() == 0
        await self._history_fixture(store)
        assert await store.count("Patient") == 1  # b is deleted
        assert await store.count("Observation") == 1
        assert await store.count("Encounter") == 0
        assert await store.count() == 2

    async def test_search_sees_index_entries_and_updates_replace_them(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1), identifier=[{"system": SYS, "value": "old"}])
        await self.put(store, "Patient", "p2", 1, ts(2), identifier=[{"system": SYS, "value": "other"}])
        assert [m.id for m in (await store.search(by_identifier("Patient", "old"))).matches] == ["p1"]
        await self.put(store, "Patient", "p1", 2, ts(3), identifier=[{"system": SYS, "value": "new"}])
        assert (await store.search(by_identifier("Patient", "old"))).matches == []
        found = (await store.search(by_identifier("Patient", "new"))).matches
        assert [(m.id, m.version_id) for m in found] == [("p1", 2)]
        assert (await store.search(by_identifier("Observation", "new"))).matches == []

    async def test_reindex_reextracts_current_resources(self, store: ResourceStore) -> None:
        await self.put(store, "Patient", "p1", 1, ts(1), identifier=[{"system": SYS, "value": "i1"}],
                       alias=[{"system": SYS, "value": "a1"}])
        await self.put(store, "Patient", "p2", 1, ts(2), alias=[{"system": SYS, "value": "a2"}])
        await self.put(store, "Observation", "o1", 1, ts(3), alias=[{"system": SYS, "value": "a3"}])
        await self.put(store, "Patient", "gone", 1, ts(4), alias=[{"system": SYS, "value": "a4"}])
        await self.delete(store, "Patient", "gone", 2, ts(5))
        assert (await store.search(by_identifier("Patient", "a1"))).matches == []
        self.index_field = "alias"  # the extraction changes, as after a SearchParameter change
        try:
            assert await store.reindex("Patient") == 2  # live Patients only
            assert [m.id for m in (await store.search(by_identifier("Patient", "a1"))).matches] == ["p1"]
            assert (await store.search(by_identifier("Patient", "i1"))).matches == []
            assert (await store.search(by_identifier("Patient", "a4"))).matches == []
            assert (await store.search(by_identifier("Observation", "a3"))).matches == []  # not reindexed
            assert await store.reindex() == 3
            assert [m.id for m in (await store.search(by_identifier("Observation", "a3"))).matches] == ["o1"]
        finally:
            self.index_field = "identifier"

    async def test_cancelled_units_of_work_roll_back_and_leave_the_store_usable(self, store: ResourceStore) -> None:
        """A request task cancelled at any await of its unit of work (client gone, server shutting down)."""
        for n, ticks in enumerate((0, 1, 2, 3, 5, 8, 13, 30)):
            async def doomed(n: int = n) -> None:
                async with store.transaction() as uow:
                    v, doc = make_version("Patient", f"cancel{n}", 1, ts(n))
                    await uow.put(v, doc, expected_version=NEW)
                    await asyncio.sleep(10)

            task = asyncio.create_task(doomed())
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await store.read("Patient", f"cancel{n}") is None
            v = await asyncio.wait_for(self.put(store, "Patient", f"after{n}", 1, ts(n)), 10)
            got = await store.read("Patient", f"after{n}")
            assert got is not None and got.body == v.body
