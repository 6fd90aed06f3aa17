"""Shared fixtures: a real SQLite file per test, the ASGI app, an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app, profile_folders
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings

CACHE_DIR = Path(__file__).resolve().parent.parent / ".pytest_cache" / "fhir-packages"


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    """What the server loads at start-up: the bundled packages and profiles/."""
    return Definitions.load(profile_folders(), cache_dir=CACHE_DIR)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), max_body_bytes=1024 * 1024, auth=False)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    await application.state.services.store.open()
    try:
        yield application
    finally:
        await application.state.services.store.close()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as c:
        yield c


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
