"""The portal in process (Starlette's TestClient over the real app and a real SQLite store) for the
HTTP tests; the browser tests start a real server process (test_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from tests.portal.network import PASSWORD, Seeded, portal_settings, seed_now

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> tuple[Path, Seeded]:
    data_dir = tmp_path_factory.mktemp("portal")
    return data_dir, seed_now(data_dir, definitions)


@pytest.fixture(scope="module")
def app_client(seeded_dir: tuple[Path, Seeded], definitions: Definitions) -> Iterator[TestClient]:
    app = create_app(portal_settings(seeded_dir[0], portal_lockout_failures=3), definitions=definitions)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def net(seeded_dir: tuple[Path, Seeded]) -> Seeded:
    return seeded_dir[1]


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """A fresh cookie jar signed in as ``username`` (sharing the app)."""
    client.cookies.clear()
    page = client.get("/portal/login")
    answer = client.post("/portal/login", data={"csrf": csrf_of(page.text), "username": username,
                                                "password": password}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client
