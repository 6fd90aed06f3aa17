"""The end-to-end search tests over HTTP (tests/store/test_search_http.py) re-run with the app on
MongoDB: the same results as on the embedded store.

The tests are imported unchanged; only the ``settings`` fixture differs: ``store_url`` names a
database, emptied before each test, on ``MONGODB_URL`` or the session's SecantusDB
(tests/mongo_server.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import module_db_url, mongo_url, wiped_db_url  # noqa: F401 - fixtures
from tests.store.test_search_http import *  # noqa: F403 - the search tests, re-run here
from tests.store.test_search_http import ids, search


@pytest.fixture
def settings(tmp_path: Path, wiped_db_url: str) -> Settings:  # noqa: F811
    return Settings(data_dir=tmp_path, store_url=wiped_db_url, cache_dir=str(CACHE_DIR),
                    max_body_bytes=1024 * 1024, auth=False)


async def test_the_app_runs_on_mongodb(client: httpx.AsyncClient) -> None:
    r = await client.get("/metadata")
    assert r.status_code == 200


async def test_more_shapes_on_mongodb(data: httpx.AsyncClient) -> None:
    """Shapes the shared tests do not cover: :text, :of-type-free tokens, uri, ranges with every prefix."""
    assert ids(await search(data, "/Observation?code:text=bp&_sort=-value-quantity")) == ["o2", "o0", "o1"]
    assert ids(await search(data, "/Observation?value-quantity=ne80&_sort=value-quantity")) == ["o0", "o2"]
    assert ids(await search(data, "/Observation?date=eb2024-01-01&date=sa2000")) == ["o2"]
    assert ids(await search(data, "/Observation?subject:missing=false&code=http://loinc.org|")) == ["o0", "o1", "o2"]
    assert ids(await search(data, "/Patient?_id:not=p1&_sort=_id")) == ["p2", "p3"]
    b = await search(data, "/Patient?_sort=gender,-_lastUpdated&_count=1&_offset=1")
    assert ids(b) == ["p2"] and b["total"] == 3
    b = await search(data, "/Organization?_revinclude:iterate=Patient:organization"
                           "&_revinclude:iterate=Observation:subject")
    assert ids(b) == ["org1"] and sorted(ids(b, "include")) == ["o0", "o1", "p1"]
