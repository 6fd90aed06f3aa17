"""The Bundle tests (transaction, batch, document, $process-message) re-run with the app on MongoDB:
transaction Bundles and messages commit or roll back as one on the SecantusDB replica set (or
``MONGODB_URL``), exactly as on the embedded store.

The tests are imported unchanged; only the ``settings`` fixture differs (a database of this module,
emptied before each test; tests/mongo_server.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_exchange.settings import Settings
from tests.bundles.test_batch import *  # noqa: F403 - the Bundle tests, re-run here
from tests.bundles.test_document import *  # noqa: F403
from tests.bundles.test_message import *  # noqa: F403
from tests.bundles.test_transaction import *  # noqa: F403
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path: Path, wiped_db_url: str) -> Settings:  # noqa: F811
    # As in test_message: the engine with minimal messages; the consult profiles do not depend on the store.
    return Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR),
                    max_body_bytes=1024 * 1024, auth=False,
                    consult_profiles=False)
