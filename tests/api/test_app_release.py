"""An application that has been closed is released whole: nothing module-level keeps its router (and
with it the services, the definitions' compiled caches and the validator, ~80 MB) alive. Every test
and every `create_app` in one process relies on it."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import httpx

from fhir_exchange.api.app import create_app
from fhir_exchange.interactions.router import Router
from fhir_exchange.settings import Settings


async def _use(tmp_path: Path) -> weakref.ref[Router]:
    """Open an application, write and search through it, close it; only a weak reference leaves."""
    app = create_app(Settings(data_dir=tmp_path, auth=False))
    await app.state.services.store.open()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir") as c:
        r = await c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Kim"}]})
        assert r.status_code == 201, r.text
        assert (await c.get("/Patient?name=Kim")).json()["total"] == 1
    await app.state.services.store.close()
    return weakref.ref(app.state.router)


async def test_a_closed_application_is_garbage_collected(tmp_path: Path) -> None:
    router = await _use(tmp_path)
    gc.collect()
    assert router() is None
