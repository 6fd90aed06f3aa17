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
- count and reindex;
- owners: every read path returns the owner each version was written with;
- grants (replaced per basis, revoked, judged at an instant), message records (a duplicate key
  conflicts; they roll back with the unit of work), the change feed (every committed write once, in
  seq order; nothing from a rolled-back unit of work; ``last_change``);
- visibility compiled into searches (matches, totals, counts, chains, ``_has``, includes, sorts,
  ``_id``, several types) and history (every level, totals, ``_at``), the readable types (scopes)
  included: an unreadable type is never matched, chained through, included or listed in history;
- internal records outside the FHIR namespace: round trip, expiry (``expires <= now`` is absent),
  ``if_absent`` (only over nothing or an expired record; of concurrent callers exactly one writes),
  listing by key, delete and purge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import AnyOf, Param, ReferenceValue, SearchQuery, Visibility
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
from tests.conftest import CACHE_DIR

SYS = "urn:contract"


def ts(second: int) -> str:
    """A FHIR instant ``second`` seconds after a fixed origin (sortable as text)."""
    minute, sec = divmod(second, 60)
    return f"2024-01-01T00:{minute:02d}:{sec:02d}.000Z"


def resource(type: str, id: str, version: int, when: str, /, **extra: Any) -> dict[str, Any]:
    return {"resourceType": type, "id": id, "meta": {"versionId": str(version), "lastUpdated": when}, **extra}


def make_version(type: str, id: str, version: int, when: str, /, *, method: str = "PUT", owner: str | None = None,
                 **extra: Any) -> tuple[ResourceVersion, dict[str, Any]]:
    doc = resource(type, id, version, when, **extra)
    return ResourceVersion(type, id, version, when, False, orjson.dumps(doc), method, owner), doc


def marker(type: str, id: str, version: int, when: str, owner: str | None = None) -> ResourceVersion:
    return ResourceVersion(type, id, version, when, True, b"", "DELETE", owner)


@functools.cache
def _definitions() -> Definitions:
    return Definitions.load(cache_dir=CACHE_DIR)


def by_identifier(type: str | None, value: str) -> SearchQuery:
    """``identifier=SYS|value``, built by the search module's own parser (so it follows the query model)."""
    return parse(_definitions(), type, [("identifier", f"{SYS}|{value}")], strict=True)


def query(type: str | None, *pairs: tuple[str, str], visibility: Visibility | None = None) -> SearchQuery:
    """A search parsed by the search module's parser, with a visibility."""
    q = parse(_definitions(), type, list(pairs), strict=True)
    return dataclasses.replace(q, visibility=visibility)


AT = ts(30)  # the instant the visibility tests judge grants at
# Institution "a", with the Organizations shared (the network's directory).
VIS_A = Visibility(frozenset({"a"}), frozenset({"Organization"}), AT)


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
        # ``subject`` (Type/id): for chains, _has and includes.
        ref = (doc.get("subject") or {}).get("reference", "")
        if "/" in ref:
            t, _, i = ref.partition("/")
            out.append(IndexEntry("subject", "reference", ref_type=t, ref_id=i))
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
                  expected: int | None = None, method: str = "PUT", owner: str | None = None,
                  **extra: Any) -> ResourceVersion:
        v, doc = make_version(type, id, version, when, method=method, owner=owner, **extra)
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=(version - 1 if version > 1 else NEW) if expected is None
                          else expected)
        return v

    async def delete(self, store: ResourceStore, type: str, id: str, version: int, when: str, /, *,
                     owner: str | None = None) -> ResourceVersion:
        v = marker(type, id, version, when, owner)
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

    # -- owners ---------------------------------------------------------------------------------

    async def test_owner_round_trips_through_every_read_path(self, store: ResourceStore) -> None:
        ident = [{"system": SYS, "value": "own"}]
        await self.put(store, "Patient", "p1", 1, ts(1), owner="org-a", identifier=ident)
        await self.put(store, "Patient", "p1", 2, ts(2), owner="org-b", identifier=ident)
        await self.put(store, "Observation", "o1", 1, ts(3), owner="org-a", subject={"reference": "Patient/p1"},
                       identifier=ident)
        await self.put(store, "Observation", "o2", 1, ts(4), owner="org-c")
        await self.delete(store, "Observation", "o2", 2, ts(5), owner="org-d")
        await self.put(store, "Patient", "none", 1, ts(6))
        read = await store.read("Patient", "p1")
        assert read is not None and read.owner == "org-b"
        assert [(await store.vread("Patient", "p1", n)).owner for n in (1, 2)] == ["org-a", "org-b"]  # type: ignore[union-attr]
        gone = await store.read("Observation", "o2")
        assert gone is not None and gone.deleted and gone.owner == "org-d"
        assert (await store.vread("Observation", "o2", 1)).owner == "org-c"  # type: ignore[union-attr]
        none = await store.read("Patient", "none")
        assert none is not None and none.owner is None
        history = await store.history(HistoryQuery())
        assert [(v.id, v.version_id, v.owner) for v in history.versions] == [
            ("none", 1, None), ("o2", 2, "org-d"), ("o2", 1, "org-c"), ("o1", 1, "org-a"), ("p1", 2, "org-b"),
            ("p1", 1, "org-a")]
        assert [v.owner for v in (await store.history(HistoryQuery(at=ts(2)))).versions] == ["org-b"]
        found = await store.search(query("Observation", ("identifier", f"{SYS}|own"),
                                         ("_include", "Observation:subject")))
        assert [(m.id, m.owner) for m in found.matches] == [("o1", "org-a")]
        assert [(m.id, m.owner) for m in found.includes] == [("p1", "org-b")]
        async with store.transaction() as uow:
            inside = await uow.read("Patient", "p1")
            assert inside is not None and inside.owner == "org-b"
            v, doc = make_version("Patient", "p1", 3, ts(7), owner="org-e", identifier=ident)
            await uow.put(v, doc, expected_version=2)
            mine = await uow.search(by_identifier("Patient", "own"))
            assert [m.owner for m in mine.matches] == ["org-e"]

    # -- grants ---------------------------------------------------------------------------------

    async def test_grants_are_replaced_per_basis_revoked_and_judged_at_an_instant(
            self, store: ResourceStore) -> None:
        a = Visibility(frozenset({"a"}), frozenset(), ts(10))
        async with store.transaction() as uow:
            assert not await uow.granted(a, "Patient", "p1")
            await uow.replace_grants("consult/1", [Grant("a", "Patient", "p1"),
                                                   Grant("a", "Observation", "o1", until=ts(20)),
                                                   Grant("b", "Patient", "p2")])
            assert await uow.granted(a, "Patient", "p1")  # its own write
        assert await store.granted(a, "Patient", "p1")
        assert await store.granted(a, "Observation", "o1")
        assert await store.granted(dataclasses.replace(a, at=ts(19)), "Observation", "o1")
        assert not await store.granted(dataclasses.replace(a, at=ts(20)), "Observation", "o1")  # until is exclusive
        assert not await store.granted(a, "Patient", "p2")  # granted to b
        assert not await store.granted(a, "Observation", "p1")  # another type
        assert await store.granted(Visibility(frozenset({"a", "b"}), frozenset(), ts(10)), "Patient", "p2")
        assert not await store.granted(Visibility(frozenset(), frozenset({"Patient"}), ts(10)), "Patient", "p1")
        async with store.transaction() as uow:
            await uow.replace_grants("consult/2", [Grant("a", "Patient", "p3")])
        async with store.transaction() as uow:
            await uow.replace_grants("consult/1", [Grant("a", "Patient", "p2")])  # replaces consult/1 only
        assert not await store.granted(a, "Patient", "p1")
        assert not await store.granted(a, "Observation", "o1")
        assert await store.granted(a, "Patient", "p2")
        assert await store.granted(a, "Patient", "p3")
        async with store.transaction() as uow:
            await uow.replace_grants("consult/1", [])  # revoked
            assert not await uow.granted(a, "Patient", "p2")
        assert not await store.granted(a, "Patient", "p2")
        assert await store.granted(a, "Patient", "p3")
        with pytest.raises(RuntimeError):
            async with store.transaction() as uow:
                await uow.replace_grants("consult/2", [])
                raise RuntimeError("rolled back")
        assert await store.granted(a, "Patient", "p3")

    # -- internal records -----------------------------------------------------------------------

    async def test_records_round_trip_outside_the_fhir_namespace(self, store: ResourceStore) -> None:
        rec = Record("client", "c1", b'{"jwks": {}}')
        assert await store.get_record("client", "c1", now=ts(1)) is None
        assert await store.put_record(rec)
        assert await store.get_record("client", "c1", now=ts(1)) == rec
        assert await store.get_record("secret", "c1", now=ts(1)) is None  # kinds are apart
        binary = Record("secret", "c1", bytes(range(256)))
        assert await store.put_record(binary)
        assert await store.get_record("secret", "c1", now=ts(1)) == binary
        replaced = Record("client", "c1", b"{}", ts(50))
        assert await store.put_record(replaced)  # an upsert
        assert await store.get_record("client", "c1", now=ts(1)) == replaced
        assert await store.get_record("client", "c1|x", now=ts(1)) is None
        # Never reachable through the FHIR API: no resource, search hit, history entry or change.
        assert await store.count() == 0
        assert (await store.search(SearchQuery(None))).total == 0
        assert (await store.history(HistoryQuery())).total == 0
        assert await store.changes(0) == [] and await store.last_change() == 0
        with pytest.raises(ValueError):
            Record("a|b", "c", b"")

    async def test_records_expire(self, store: ResourceStore) -> None:
        rec = Record("jti", "c1|j1", b"", ts(10))
        assert await store.put_record(rec)
        assert await store.get_record("jti", "c1|j1", now=ts(9)) == rec
        assert await store.get_record("jti", "c1|j1", now=ts(10)) is None  # expires <= now: expired
        assert await store.get_record("jti", "c1|j1", now=ts(11)) is None
        assert await store.list_records("jti", now=ts(9)) == [rec]
        assert await store.list_records("jti", now=ts(10)) == []

    async def test_put_record_if_absent_writes_only_over_nothing_or_an_expired_record(
            self, store: ResourceStore) -> None:
        first = Record("jti", "c1|j1", b"1", ts(10))
        assert await store.put_record(first, if_absent=True, now=ts(5))
        assert not await store.put_record(Record("jti", "c1|j1", b"2", ts(20)), if_absent=True, now=ts(9))
        assert await store.get_record("jti", "c1|j1", now=ts(5)) == first  # untouched
        second = Record("jti", "c1|j1", b"3", ts(30))
        assert await store.put_record(second, if_absent=True, now=ts(10))  # the first expired at ts(10)
        assert await store.get_record("jti", "c1|j1", now=ts(10)) == second
        assert not await store.put_record(Record("jti", "c1|j1", b"4"), if_absent=True, now=ts(29))
        # A record that never expires is never replaced by if_absent; a plain put replaces it.
        secret = Record("secret", "access-token", b"k1")
        assert await store.put_record(secret, if_absent=True, now=ts(1))
        assert not await store.put_record(Record("secret", "access-token", b"k2"), if_absent=True, now=ts(59))
        assert await store.get_record("secret", "access-token", now=ts(59)) == secret
        assert await store.put_record(Record("secret", "access-token", b"k3"))
        got = await store.get_record("secret", "access-token", now=ts(59))
        assert got is not None and got.value == b"k3"
        # Without now no record counts as expired.
        assert not await store.put_record(Record("jti", "c1|j1", b"5"), if_absent=True)
        # A deleted record is absent.
        assert await store.delete_record("secret", "access-token")
        assert await store.put_record(Record("secret", "access-token", b"k4"), if_absent=True, now=ts(1))

    async def test_concurrent_put_record_if_absent_exactly_one_writes(self, store: ResourceStore) -> None:
        """How a replayed client assertion id is detected: of concurrent claims, exactly one is first."""
        async def claim(n: int, expires: str, now: str) -> bool:
            return await store.put_record(Record("jti", "c1|same", f"{n}".encode(), expires), if_absent=True, now=now)

        results = await asyncio.gather(*(claim(n, ts(30), ts(1)) for n in range(10)))
        assert results.count(True) == 1
        got = await store.get_record("jti", "c1|same", now=ts(1))
        assert got is not None and got.value == f"{results.index(True)}".encode()
        # The same race over an expired record: again exactly one replaces it.
        results = await asyncio.gather(*(claim(n, ts(50), ts(40)) for n in range(10)))
        assert results.count(True) == 1
        got = await store.get_record("jti", "c1|same", now=ts(40))
        assert got is not None and got.value == f"{results.index(True)}".encode() and got.expires == ts(50)

    async def test_records_are_listed_by_key_deleted_and_purged(self, store: ResourceStore) -> None:
        for key, expires in [("b", None), ("a", ts(20)), ("c", ts(10)), ("é", None), ("B", ts(40))]:
            assert await store.put_record(Record("client", key, key.encode(), expires))
        assert await store.put_record(Record("jti", "x", b"", ts(5)))
        listed = await store.list_records("client", now=ts(1))
        assert [r.key for r in listed] == ["B", "a", "b", "c", "é"]  # code point order
        assert listed[0] == Record("client", "B", b"B", ts(40))
        assert [r.key for r in await store.list_records("client", now=ts(10))] == ["B", "a", "b", "é"]
        assert await store.list_records("institution", now=ts(1)) == []
        assert await store.delete_record("client", "b")
        assert not await store.delete_record("client", "b")
        assert not await store.delete_record("jti", "b")
        assert await store.get_record("client", "b", now=ts(1)) is None
        assert await store.purge_records(ts(20)) == 3  # client c and a, jti x: expires <= now
        assert await store.purge_records(ts(20)) == 0
        assert [r.key for r in await store.list_records("client", now=ts(1))] == ["B", "é"]
        assert await store.get_record("client", "c", now=ts(1)) is None  # gone, even judged before it expired
        assert await store.list_records("jti", now=ts(1)) == []

    # -- message records ------------------------------------------------------------------------

    async def test_message_records_are_written_once(self, store: ResourceStore) -> None:
        rec = MessageRecord("urn:source|m1", "sha256:1", b'{"resourceType":"Bundle","id":"r1"}')
        async with store.transaction() as uow:
            assert await uow.read_message(rec.key) is None
            await uow.write_message(rec)
            assert await uow.read_message(rec.key) == rec
        async with store.transaction() as uow:
            assert await uow.read_message(rec.key) == rec
            assert await uow.read_message("urn:source|m2") is None
        with pytest.raises(VersionConflict):
            async with store.transaction() as uow:
                await uow.write_message(MessageRecord(rec.key, "sha256:2", b"{}"))
        async with store.transaction() as uow:
            assert await uow.read_message(rec.key) == rec

    async def test_message_records_roll_back_with_the_unit_of_work(self, store: ResourceStore) -> None:
        rec = MessageRecord("urn:source|m1", "sha256:1", b"{}")
        with pytest.raises(RuntimeError):
            async with store.transaction() as uow:
                v, doc = make_version("Bundle", "answer", 1, ts(1))
                await uow.put(v, doc, expected_version=NEW)
                await uow.write_message(rec)
                raise RuntimeError("rolled back")
        async with store.transaction() as uow:
            assert await uow.read_message(rec.key) is None
            await uow.write_message(rec)  # the key is free
        assert await store.read("Bundle", "answer") is None

    # -- change feed ----------------------------------------------------------------------------

    async def test_change_feed_numbers_every_committed_write_once_in_commit_order(
            self, store: ResourceStore) -> None:
        assert await store.last_change() == 0
        assert await store.changes(0) == []
        await self.put(store, "Patient", "a", 1, ts(1))
        await self.put(store, "Patient", "a", 2, ts(2))
        await self.put(store, "Observation", "o", 1, ts(3))
        await self.delete(store, "Patient", "a", 3, ts(4))
        async with store.transaction() as uow:  # two writes, one commit
            for id in ("b", "c"):
                v, doc = make_version("Patient", id, 1, ts(5))
                await uow.put(v, doc, expected_version=NEW)
        feed = await store.changes(0)
        assert [(c.type, c.id, c.version_id, c.deleted, c.last_updated) for c in feed] == [
            ("Patient", "a", 1, False, ts(1)), ("Patient", "a", 2, False, ts(2)), ("Observation", "o", 1, False, ts(3)),
            ("Patient", "a", 3, True, ts(4)), ("Patient", "b", 1, False, ts(5)), ("Patient", "c", 1, False, ts(5))]
        seqs = [c.seq for c in feed]
        assert seqs == sorted(set(seqs)) and seqs[0] > 0
        assert await store.last_change() == seqs[-1]
        # Paging with a cursor gives each record once.
        paged: list[int] = []
        cursor = 0
        while page := await store.changes(cursor, limit=4):
            assert len(page) <= 4
            paged += [c.seq for c in page]
            cursor = page[-1].seq
        assert paged == seqs
        assert await store.changes(seqs[2], limit=1) == [feed[3]]
        # Rolled back, conflicting and read-only units of work leave no record.
        with pytest.raises(RuntimeError):
            async with store.transaction() as uow:
                v, doc = make_version("Patient", "x", 1, ts(6))
                await uow.put(v, doc, expected_version=NEW)
                raise RuntimeError("rolled back")
        with pytest.raises(VersionConflict):
            await self.put(store, "Patient", "b", 2, ts(6), expected=5)
        async with store.transaction() as uow:
            await uow.read("Patient", "b")
        assert await store.changes(seqs[-1]) == []
        assert await store.last_change() == seqs[-1]
        await self.put(store, "Patient", "b", 2, ts(7))
        later = await store.changes(seqs[-1])
        assert [(c.id, c.version_id) for c in later] == [("b", 2)] and later[0].seq > seqs[-1]
        assert await store.last_change() == later[0].seq

    async def test_change_feed_under_concurrent_writers(self, store: ResourceStore) -> None:
        await asyncio.gather(*(self.put(store, "Patient", f"p{n}", 1, ts(n)) for n in range(12)))
        # A sequence number burned by a retried write is a gap that the feed waits out (its bound,
        # ``change_gap_s`` on MongoDB) before it hands out what follows: poll past that bound.
        deadline = asyncio.get_running_loop().time() + getattr(store, "change_gap_s", 0) + 5
        feed = await store.changes(0)
        while len(feed) < 12 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            feed = await store.changes(0)
        assert sorted(c.id for c in feed) == sorted(f"p{n}" for n in range(12))
        assert [c.seq for c in feed] == sorted({c.seq for c in feed})
        assert await store.last_change() == feed[-1].seq

    # -- visibility -----------------------------------------------------------------------------

    async def _visibility_fixture(self, store: ResourceStore) -> None:
        """Institution a owns pa, oa1 (-> pa), oa2 (-> pb); b owns pb, ob1 (-> pa, granted to a), ob2 (-> pb,
        granted to a until before AT), ob3 (-> pa, not granted); nobody owns pn; org1 (b's) is shared."""
        def ident(v: str) -> list[dict[str, str]]:
            return [{"system": SYS, "value": v}]

        await self.put(store, "Patient", "pa", 1, ts(1), owner="a", identifier=ident("pa"))
        await self.put(store, "Patient", "pb", 1, ts(2), owner="b", identifier=ident("pb"))
        await self.put(store, "Patient", "pn", 1, ts(3), identifier=ident("pn"))
        await self.put(store, "Organization", "org1", 1, ts(4), owner="b", identifier=ident("org"))
        for n, (id, owner, subject, value) in enumerate([
                ("oa1", "a", "pa", "3"), ("oa2", "a", "pb", "1"), ("ob1", "b", "pa", "2"), ("ob2", "b", "pb", "0"),
                ("ob3", "b", "pa", "hidden")]):
            await self.put(store, "Observation", id, 1, ts(5 + n), owner=owner, identifier=ident(value),
                           subject={"reference": f"Patient/{subject}"})
        async with store.transaction() as uow:
            await uow.replace_grants("consult/1", [Grant("a", "Observation", "ob1"),
                                                   Grant("a", "Observation", "ob2", until=ts(20)),
                                                   Grant("c", "Observation", "ob3")])

    @staticmethod
    def ids(versions: Sequence[ResourceVersion]) -> list[str]:
        return [v.id for v in versions]

    async def test_visibility_filters_matches_totals_and_counts(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        got = await store.search(query("Observation", visibility=VIS_A))
        assert self.ids(got.matches) == ["oa1", "oa2", "ob1"] and got.total == 3
        got = await store.search(query("Observation"))  # no visibility: everything
        assert self.ids(got.matches) == ["oa1", "oa2", "ob1", "ob2", "ob3"] and got.total == 5
        early = dataclasses.replace(VIS_A, at=ts(19))  # ob2's grant still holds
        assert self.ids((await store.search(query("Observation", visibility=early))).matches) == [
            "oa1", "oa2", "ob1", "ob2"]
        counted = await store.search(query("Observation", ("_summary", "count"), visibility=VIS_A))
        assert counted.total == 3 and counted.matches == []
        paged = await store.search(query("Observation", ("_count", "2"), ("_offset", "1"), visibility=VIS_A))
        assert self.ids(paged.matches) == ["oa2", "ob1"] and paged.total == 3
        indexed = await store.search(query("Observation", ("identifier", f"{SYS}|0,{SYS}|2,{SYS}|hidden"),
                                           visibility=VIS_A))
        assert self.ids(indexed.matches) == ["ob1"] and indexed.total == 1
        assert self.ids((await store.search(query("Patient", visibility=VIS_A))).matches) == ["pa"]
        assert (await store.search(query("Patient", ("identifier", f"{SYS}|pb"), visibility=VIS_A))).total == 0
        shared = await store.search(query("Organization", visibility=VIS_A))
        assert self.ids(shared.matches) == ["org1"]
        ids = await store.search(query("Observation", ("_id", "ob1,ob3,oa2"), visibility=VIS_A))
        assert self.ids(ids.matches) == ["oa2", "ob1"] and ids.total == 2
        nobody = Visibility(frozenset(), frozenset(), AT)
        assert (await store.search(query("Observation", visibility=nobody))).total == 0
        c = await store.search(query("Observation", visibility=Visibility(frozenset({"c"}), frozenset(), AT)))
        assert self.ids(c.matches) == ["ob3"]
        system = await store.search(query(None, ("_type", "Patient,Organization"), visibility=VIS_A))
        assert sorted(self.ids(system.matches)) == ["org1", "pa"] and system.total == 2

    async def test_visibility_sorts_only_the_visible(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        got = await store.search(query("Observation", ("_sort", "identifier"), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa2", "ob1", "oa1"] and got.total == 3
        got = await store.search(query("Observation", ("_sort", "-identifier"), ("_count", "1"), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa1"]
        got = await store.search(query("Observation", ("_sort", "-_lastUpdated"), visibility=VIS_A))
        assert self.ids(got.matches) == ["ob1", "oa2", "oa1"]

    async def test_chains_and_has_never_go_through_invisible_resources(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        chain = ("subject:Patient.identifier", f"{SYS}|pb")
        assert self.ids((await store.search(query("Observation", chain))).matches) == ["oa2", "ob2"]
        got = await store.search(query("Observation", chain, visibility=VIS_A))
        assert got.matches == [] and got.total == 0  # oa2 is visible, its subject pb is not
        got = await store.search(query("Observation", ("subject:Patient.identifier", f"{SYS}|pa"), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa1", "ob1"]
        has = ("_has:Observation:subject:identifier", f"{SYS}|hidden")
        assert self.ids((await store.search(query("Patient", has))).matches) == ["pa"]
        got = await store.search(query("Patient", has, visibility=VIS_A))
        assert got.matches == [] and got.total == 0  # pa is visible, ob3 is not
        got = await store.search(query("Patient", ("_has:Observation:subject:identifier", f"{SYS}|2"),
                                       visibility=VIS_A))
        assert self.ids(got.matches) == ["pa"]  # through ob1, granted
        # A compartment (Patient/pb/Observation: any of its reference parameters) holds only the visible.
        compartment = AnyOf((Param("subject", "reference", None, (ReferenceValue("Patient", "pb"),)),))
        got = await store.search(SearchQuery("Observation", (compartment,), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa2"] and got.total == 1
        got = await store.search(SearchQuery("Observation", (compartment,)))
        assert self.ids(got.matches) == ["oa2", "ob2"]

    async def test_includes_never_include_invisible_resources(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        got = await store.search(query("Observation", ("_include", "Observation:subject"), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa1", "oa2", "ob1"]
        assert self.ids(got.includes) == ["pa"]  # not pb (oa2's subject)
        got = await store.search(query("Patient", ("_revinclude", "Observation:subject"), visibility=VIS_A))
        assert self.ids(got.matches) == ["pa"]
        assert self.ids(got.includes) == ["oa1", "ob1"]  # not ob3
        got = await store.search(query("Patient", ("_revinclude", "Observation:subject")))
        assert self.ids(got.includes) == ["oa1", "oa2", "ob1", "ob2", "ob3"]
        # :iterate from a visible Observation to its visible Patient and back to that Patient's visible ones.
        got = await store.search(query("Observation", ("_id", "oa1"), ("_include", "Observation:subject"),
                                       ("_revinclude:iterate", "Observation:subject"), visibility=VIS_A))
        assert self.ids(got.matches) == ["oa1"] and self.ids(got.includes) == ["pa", "ob1"]

    async def test_history_is_filtered_by_visibility_at_every_level(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        await self.put(store, "Patient", "pa", 2, ts(21), owner="b", identifier=[{"system": SYS, "value": "pa"}])
        page = await store.history(HistoryQuery(visibility=VIS_A))
        assert [(v.id, v.version_id) for v in page.versions] == [
            ("ob1", 1), ("oa2", 1), ("oa1", 1), ("org1", 1), ("pa", 1)]
        assert page.total == 5
        assert (await store.history(HistoryQuery(count=2, offset=2, visibility=VIS_A))).versions[0].id == "oa1"
        assert (await store.history(HistoryQuery(count=0, visibility=VIS_A))).total == 5
        patients = await store.history(HistoryQuery("Patient", visibility=VIS_A))
        assert [(v.id, v.version_id) for v in patients.versions] == [("pa", 1)] and patients.total == 1
        assert (await store.history(HistoryQuery("Patient", "pb", visibility=VIS_A))).total == 0
        assert (await store.history(HistoryQuery("Observation", "ob1", visibility=VIS_A))).total == 1
        assert (await store.history(HistoryQuery("Organization", visibility=VIS_A))).total == 1
        # _at: the version current then, if visible: pa was a's at t10, b's at t25.
        assert [v.id for v in (await store.history(HistoryQuery("Patient", at=ts(10), visibility=VIS_A))).versions
                ] == ["pa"]
        assert (await store.history(HistoryQuery("Patient", at=ts(25), visibility=VIS_A))).total == 0
        assert (await store.history(HistoryQuery(visibility=Visibility(frozenset(), frozenset(), AT)))).total == 0
        assert (await store.history(HistoryQuery())).total == 10

    async def test_only_readable_types_are_visible(self, store: ResourceStore) -> None:
        """The caller's scopes: a type it may not read is never matched, counted, chained through,
        included or listed in history, even when it is shared, owned or granted."""
        await self._visibility_fixture(store)
        obs = dataclasses.replace(VIS_A, types=frozenset({"Observation"}))
        pat = dataclasses.replace(VIS_A, types=frozenset({"Patient", "Organization"}))
        both = dataclasses.replace(VIS_A, types=frozenset({"Patient", "Observation"}))
        none = dataclasses.replace(VIS_A, types=frozenset())
        every = dataclasses.replace(VIS_A, types=None)

        async def found(q: SearchQuery) -> tuple[list[str], int | None]:
            got = await store.search(q)
            return self.ids(got.matches), got.total

        assert await found(query("Observation", visibility=obs)) == (["oa1", "oa2", "ob1"], 3)
        assert await found(query("Observation", visibility=pat)) == ([], 0)
        assert await found(query("Observation", ("_summary", "count"), visibility=pat)) == ([], 0)
        assert await found(query("Observation", ("identifier", f"{SYS}|2"), visibility=pat)) == ([], 0)
        assert await found(query("Observation", ("_sort", "identifier"), visibility=obs)) == (["oa2", "ob1", "oa1"], 3)
        assert await found(query("Patient", visibility=obs)) == ([], 0)
        assert await found(query("Patient", visibility=pat)) == (["pa"], 1)
        assert await found(query("Organization", visibility=obs)) == ([], 0)  # shared, but not readable
        assert await found(query("Organization", visibility=pat)) == (["org1"], 1)
        assert await found(query("Observation", visibility=none)) == ([], 0)
        assert await found(query("Organization", visibility=none)) == ([], 0)
        for vis in (every, both):
            assert await found(query("Observation", visibility=vis)) == (["oa1", "oa2", "ob1"], 3)
        # Several types: only the readable ones.
        system = await store.search(query(None, ("_type", "Patient,Organization,Observation"), visibility=obs))
        assert sorted(self.ids(system.matches)) == ["oa1", "oa2", "ob1"] and system.total == 3
        system = await store.search(query(None, ("_type", "Patient,Organization,Observation"), visibility=pat))
        assert sorted(self.ids(system.matches)) == ["org1", "pa"] and system.total == 2
        system = await store.search(query(None, ("_type", "Patient,Organization"), visibility=obs))
        assert system.matches == [] and system.total == 0
        # Chains and _has never go through an unreadable type.
        chain = ("subject:Patient.identifier", f"{SYS}|pa")
        assert await found(query("Observation", chain, visibility=both)) == (["oa1", "ob1"], 2)
        assert await found(query("Observation", chain, visibility=obs)) == ([], 0)
        has = ("_has:Observation:subject:identifier", f"{SYS}|2")
        assert await found(query("Patient", has, visibility=both)) == (["pa"], 1)
        assert await found(query("Patient", has, visibility=pat)) == ([], 0)
        # Includes: neither direction reaches an unreadable type, at any :iterate depth.
        got = await store.search(query("Observation", ("_include", "Observation:subject"), visibility=obs))
        assert self.ids(got.matches) == ["oa1", "oa2", "ob1"] and got.includes == []
        got = await store.search(query("Observation", ("_include", "Observation:subject:Patient"), visibility=obs))
        assert got.includes == []
        got = await store.search(query("Patient", ("_revinclude", "Observation:subject"), visibility=pat))
        assert self.ids(got.matches) == ["pa"] and got.includes == []
        got = await store.search(query("Patient", ("_revinclude", "Observation:subject"), visibility=both))
        assert self.ids(got.includes) == ["oa1", "ob1"]
        for vis, includes in ((both, ["pa", "ob1"]), (obs, []), (every, ["pa", "ob1"])):
            got = await store.search(query("Observation", ("_id", "oa1"), ("_include", "Observation:subject"),
                                           ("_revinclude:iterate", "Observation:subject"), visibility=vis))
            assert self.ids(got.matches) == ["oa1"] and self.ids(got.includes) == includes, vis

    async def test_history_lists_only_readable_types(self, store: ResourceStore) -> None:
        await self._visibility_fixture(store)
        await self.put(store, "Patient", "pa", 2, ts(21), owner="b", identifier=[{"system": SYS, "value": "pa"}])
        obs = dataclasses.replace(VIS_A, types=frozenset({"Observation"}))
        pat = dataclasses.replace(VIS_A, types=frozenset({"Patient", "Organization"}))
        page = await store.history(HistoryQuery(visibility=obs))
        assert [(v.id, v.version_id) for v in page.versions] == [("ob1", 1), ("oa2", 1), ("oa1", 1)]
        assert page.total == 3
        page = await store.history(HistoryQuery(visibility=pat))
        assert [(v.id, v.version_id) for v in page.versions] == [("org1", 1), ("pa", 1)] and page.total == 2
        assert (await store.history(HistoryQuery(count=1, offset=1, visibility=obs))).versions[0].id == "oa2"
        assert (await store.history(HistoryQuery("Patient", visibility=obs))).total == 0
        assert (await store.history(HistoryQuery("Patient", "pa", visibility=obs))).total == 0
        assert (await store.history(HistoryQuery("Organization", visibility=obs))).total == 0  # shared, unreadable
        assert (await store.history(HistoryQuery("Organization", visibility=pat))).total == 1
        assert (await store.history(HistoryQuery("Observation", "ob1", visibility=obs))).total == 1
        assert (await store.history(HistoryQuery("Observation", "ob1", visibility=pat))).total == 0
        assert [v.id for v in (await store.history(HistoryQuery("Patient", at=ts(10), visibility=pat))).versions
                ] == ["pa"]
        assert (await store.history(HistoryQuery("Patient", at=ts(10), visibility=obs))).total == 0
        assert [v.id for v in (await store.history(HistoryQuery(at=ts(10), visibility=pat))).versions
                ] == ["org1", "pa"]
        none = dataclasses.replace(VIS_A, types=frozenset())
        assert (await store.history(HistoryQuery(visibility=none))).total == 0
        assert (await store.history(HistoryQuery("Organization", visibility=none))).total == 0
        assert (await store.history(HistoryQuery(visibility=dataclasses.replace(VIS_A, types=None)))).total == 5
