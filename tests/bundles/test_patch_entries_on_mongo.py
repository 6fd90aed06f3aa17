"""The PATCH entry tests (tests/bundles/test_patch_entries.py) re-run with the app on MongoDB (SecantusDB
or ``MONGODB_URL``; tests/mongo_server.py): batch and transaction patch the same way on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.settings import Settings
from tests.bundles.test_patch_entries import *  # noqa: F403 - the tests, re-run here
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path: Path, wiped_db_url: str) -> Settings:  # noqa: F811
    return Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR),
                    max_body_bytes=1024 * 1024, auth=False, consult_profiles=False)
