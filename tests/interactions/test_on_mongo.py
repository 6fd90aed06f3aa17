"""The router-level REST tests re-run with the app on MongoDB: the same behaviour as on SQLite.

The tests are imported unchanged from the modules beside this one; only the ``settings`` fixture differs:
``store_url`` names a database, emptied before each test, on ``MONGODB_URL`` or the session's
SecantusDB (tests/mongo_server.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.interactions.services import Services
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.interactions.test_crud import *  # noqa: F403 - the REST tests, re-run here
from tests.interactions.test_history_conditional_routing import *  # noqa: F403
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path: Path, wiped_db_url: str) -> Settings:  # noqa: F811
    return Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR),
                    max_body_bytes=1024 * 1024, auth=False)


def test_the_app_runs_on_mongodb(services: Services) -> None:
    assert services.store.name == "mongodb"
