"""The store contract for the MongoDB adapter, on a real wire-protocol server (no mocks).

The server is ``MONGODB_URL`` when set, otherwise a SecantusDB process started by the session fixture
(tests/mongo_server.py); each test gets a database of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import ResourceStore
from tests.mongo_server import fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.contract import StoreContract


class TestMongoStore(StoreContract):
    url: str = ""

    @pytest.fixture(autouse=True)
    def _database(self, fresh_db_url: str) -> None:  # noqa: F811
        self.url = fresh_db_url

    async def make_store(self, tmp_path: Path) -> ResourceStore:
        return MongoStore(self.url, indexer=self.indexer)
