"""Issue 14, "Durability": SQLite commits are durable by default (``synchronous=FULL`` in WAL mode), the
relaxed NORMAL mode is a setting; the MongoDB fault tests run SecantusDB in its durable mode, where
every acknowledged write survives a kill -9 of the database."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.settings import Settings
from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import NEW, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore
from tests.conftest import CACHE_DIR
from tests.mongo_server import SecantusServer

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


async def _synchronous(settings: Settings) -> int:
    app = create_app(settings)
    store = app.state.services.store
    await store.open()
    try:
        sqlite = getattr(store, "inner", store)  # inside the metrics wrapper (api/instrument.py), if any
        assert isinstance(sqlite, SqliteStore)
        value: int = sqlite._writer_conn.execute("PRAGMA synchronous").fetchone()[0]
        return value
    finally:
        await store.close()


async def test_sqlite_is_durable_by_default(tmp_path: Path) -> None:
    assert await _synchronous(Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False)) == FULL


async def test_sqlite_normal_is_a_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({"FHIR_EXCHANGE_SQLITE_SYNCHRONOUS": "normal"}, data_dir=tmp_path,
                                 cache_dir=str(CACHE_DIR), auth=False)
    assert await _synchronous(settings) == NORMAL


def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        create_app(Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False, sqlite_synchronous="off"))


def test_the_fault_tests_secantusdb_is_durable() -> None:
    source = (Path(__file__).resolve().parents[1] / "store" / "test_mongo_faults.py").read_text()
    assert "SecantusServer(durable=True)" in source
    assert "--sync-on-commit" in SecantusServer(durable=True).command()


def _version(i: int) -> tuple[ResourceVersion, dict[str, object]]:
    r = {"resourceType": "Patient", "id": f"p{i}", "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}}
    body = str(r).encode()
    return ResourceVersion("Patient", f"p{i}", 1, "2024-01-01T00:00:00.000Z", False, body, "POST"), r


async def test_acknowledged_mongodb_writes_survive_a_kill_of_the_database() -> None:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("kills a SecantusDB of its own")
    server = SecantusServer(durable=True)
    server.start()
    try:
        url = server.url + f"d{uuid.uuid4().hex[:8]}"
        store = MongoStore(url)
        await store.open()
        try:
            for i in range(30):
                v, r = _version(i)
                async with store.transaction() as uow:
                    await uow.put(v, r, expected_version=NEW)
        finally:
            await store.close()
        server.kill()  # SIGKILL right after the last acknowledgement
        server.start()
        store = MongoStore(url)
        await store.open()
        try:
            found = [await store.read("Patient", f"p{i}") for i in range(30)]
        finally:
            await store.close()
        assert all(v is not None for v in found)
    finally:
        server.cleanup()
