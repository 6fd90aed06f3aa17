"""``fhir-exchange migrate --from sqlite:///... --to mongodb://...``: every resource and every version
arrives identical (bytes, version ids, lastUpdated, delete markers, methods, owners), search works on the copy,
and a second run copies nothing new.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fhir_exchange.cli import main
from fhir_exchange.search.query import Param, SearchQuery, TokenValue
from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import HistoryQuery, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore
from tests.conftest import CACHE_DIR
from tests.mongo_server import fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.contract import SYS, StoreContract, make_version, marker, ts


async def _populate(path: Path) -> None:
    store = SqliteStore(path, indexer=StoreContract().indexer)
    await store.open()
    try:
        for n in range(40):
            type = ("Patient", "Observation", "Encounter")[n % 3]
            v, doc = make_version(type, f"r{n}", 1, ts(n), method="POST",
                                  owner=("org-a", "org-b", None, "org-c")[n % 4],
                                  identifier=[{"system": SYS, "value": f"v{n}"}])
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=0)
        for n in range(0, 40, 4):  # some updated twice
            for version in (2, 3):
                type = ("Patient", "Observation", "Encounter")[n % 3]
                v, doc = make_version(type, f"r{n}", version, ts(100 + n * 3 + version), method="PATCH",
                                      owner=f"org-{version}", identifier=[{"system": SYS, "value": f"v{n}-{version}"}])
                async with store.transaction() as uow:
                    await uow.put(v, doc, expected_version=version - 1)
        for n in (1, 5, 9):  # some deleted
            type = ("Patient", "Observation", "Encounter")[n % 3]
            async with store.transaction() as uow:
                await uow.delete(marker(type, f"r{n}", 2, ts(300 + n), "org-x"), expected_version=1)
    finally:
        await store.close()


async def _everything(store: SqliteStore | MongoStore) -> list[ResourceVersion]:
    page = await store.history(HistoryQuery(count=10_000))
    return sorted(page.versions, key=lambda v: (v.type, v.id, v.version_id))


async def _compare(path: Path, url: str) -> None:
    source, target = SqliteStore(path), MongoStore(url)
    await source.open()
    await target.open()
    try:
        src, dst = await _everything(source), await _everything(target)
        assert len(src) == 40 + 20 + 3
        assert [(v.type, v.id, v.version_id, v.last_updated, v.deleted, v.method, v.body, v.owner) for v in src] == \
            [(v.type, v.id, v.version_id, v.last_updated, v.deleted, v.method, v.body, v.owner) for v in dst]
        assert {v.owner for v in src} == {"org-a", "org-b", "org-c", None, "org-2", "org-3", "org-x"}
        for v in src:
            got = await target.vread(v.type, v.id, v.version_id)
            assert got is not None and got.body == v.body and got.deleted == v.deleted
            a, b = await source.read(v.type, v.id), await target.read(v.type, v.id)
            assert a is not None and b is not None
            assert (a.version_id, a.last_updated, a.deleted, a.body, a.owner) == (
                b.version_id, b.last_updated, b.deleted, b.body, b.owner)
        assert await target.count() == await source.count() == 37
        # Search values were extracted on the target (the server's indexer), from current versions only.
        def by_value(value: str) -> SearchQuery:
            return SearchQuery("Patient", (Param("identifier", "token", None, (TokenValue(SYS, value),)),))

        found = await target.search(by_value("v12-3"))
        assert [m.id for m in found.matches] == ["r12"]
        old = await target.search(by_value("v12"))
        assert old.matches == []
    finally:
        await source.close()
        await target.close()


def test_migrate_sqlite_to_mongodb_copies_every_version(tmp_path: Path, fresh_db_url: str,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_EXCHANGE_CACHE_DIR", str(CACHE_DIR))
    path = tmp_path / "fhir.db"
    asyncio.run(_populate(path))
    assert main(["migrate", "--from", f"sqlite:///{path}", "--to", fresh_db_url]) == 0
    out = capsys.readouterr().out
    assert "Migrated 40 resources, 63 versions (63 new)" in out and "every version identical" in out
    asyncio.run(_compare(path, fresh_db_url))
    # Idempotent: a second run finds everything there.
    assert main(["migrate", "--from", f"sqlite:///{path}", "--to", fresh_db_url]) == 0
    assert "(0 new)" in capsys.readouterr().out
