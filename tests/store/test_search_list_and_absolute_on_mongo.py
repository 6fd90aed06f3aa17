"""The ``_list`` and absolute-reference search tests (test_search_list_and_absolute.py) re-run with the app
on MongoDB (SecantusDB or ``MONGODB_URL``; tests/mongo_server.py): the same results as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures
from tests.store.test_search_list_and_absolute import *  # noqa: F403 - the tests, re-run here


@pytest.fixture
def settings(tmp_path: Path, wiped_db_url: str) -> Settings:  # noqa: F811
    return Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR),
                    max_body_bytes=1024 * 1024, auth=False)


def test_these_run_on_mongodb(settings: Settings) -> None:
    assert settings.store_url.startswith("mongodb://")
