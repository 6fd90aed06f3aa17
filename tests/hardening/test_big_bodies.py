"""Issue 14, "Big bodies": a big resource is parsed, validated and indexed in worker threads (the
event loop keeps serving), is judged exactly as a small one, and a body over the limit is 413 before it
is read. The latency and memory figures are bench/bench_bigbody.py's."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.api.limits import AheadValidator
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR

OFFLOAD = 64 * 1024


def big_patient(n: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Big"}], **extra,
            "identifier": [{"system": "urn:oid:1.2.410.100.1", "value": f"MRN-{i:07d}"} for i in range(n)]}


@pytest.fixture
async def big_app(tmp_path: Path) -> AsyncIterator[tuple[Starlette, list[str]]]:
    app = create_app(Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False, offload_bytes=OFFLOAD,
                              max_body_bytes=4 * 1024 * 1024, rate_limit=0))
    validator = app.state.services.validator
    assert isinstance(validator, AheadValidator)
    threads: list[str] = []
    inner = validator.inner

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def validate(self, resource: dict[str, Any], **kw: Any) -> Any:
            threads.append(threading.current_thread().name)
            return inner.validate(resource, **kw)

    validator.inner = Recording()
    await app.state.services.store.open()
    try:
        yield app, threads
    finally:
        await app.state.services.store.close()


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir", timeout=60)


async def test_a_big_resource_is_validated_off_the_event_loop_and_stored(big_app: tuple[Starlette, list[str]]
                                                                         ) -> None:
    app, threads = big_app
    main = threading.current_thread().name
    async with client_of(app) as client:
        r = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
        assert r.status_code == 201 and threads == [main]  # small: on the loop, as before
        body = big_patient(3000)
        assert len(orjson.dumps(body)) > OFFLOAD
        threads.clear()
        r = await client.post("/Patient", json=body)
        assert r.status_code == 201, r.text
        assert threads and all(t != main for t in threads)  # once, in a worker thread, not again on the loop
        assert len(threads) == 1
        location = r.headers["Location"].split("/fhir", 1)[1].split("/_history")[0]
        r = await client.get("/Patient", params={"identifier": "urn:oid:1.2.410.100.1|MRN-0002999"})
        assert r.json()["total"] == 1  # indexed (in a worker thread too) like any other
        threads.clear()
        updated = {**big_patient(3000), "id": location.rsplit("/", 1)[1], "gender": "female"}
        r = await client.put(location, json=updated)
        assert r.status_code == 200, r.text
        assert len(threads) == 1 and threads[0] != main
        assert (await client.get(location)).json()["gender"] == "female"


async def test_a_big_invalid_resource_is_refused_as_a_small_one(big_app: tuple[Starlette, list[str]]) -> None:
    app, _ = big_app
    async with client_of(app) as client:
        r = await client.post("/Patient", json=big_patient(3000, gender="sometimes"))
        assert r.status_code in (400, 422), r.text
        issues = r.json()["issue"]
        assert any("Patient.gender" in e for i in issues for e in i.get("expression", [])), issues
        r = await client.post("/Patient", json=big_patient(3000, birthDate="2020-02-30"))
        assert r.status_code in (400, 422)
        assert (await client.get("/Patient", params={"_summary": "count"})).json()["total"] == 0


async def test_a_body_over_the_limit_is_413(big_app: tuple[Starlette, list[str]]) -> None:
    app, _ = big_app
    async with client_of(app) as client:
        r = await client.post("/Patient", json=big_patient(80000))  # ~5 MiB, the limit is 4 MiB
        assert r.status_code == 413
        assert r.json()["issue"][0]["code"] == "too-costly"
