"""The HTTP edge on MongoDB when the database is unreachable: the server starts anyway and answers
503 with an OperationOutcome and ``Retry-After`` until MongoDB is reachable, then serves normally.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from fhir_exchange.api.app import create_app
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.mongo_server import SecantusServer


async def test_unreachable_mongodb_answers_503_until_it_is_up(tmp_path: Path) -> None:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("starts its own SecantusDB")
    server = SecantusServer()
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR),
                        store_url=server.url + "late?serverSelectionTimeoutMS=300", auth=False)
    app = create_app(settings)
    await app.state.services.store.open()  # the lifespan's start-up: must not fail
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as client:
            for _ in range(2):
                r = await client.get("/Patient/p1")
                assert r.status_code == 503
                assert int(r.headers["Retry-After"]) > 0
                outcome = r.json()
                assert outcome["resourceType"] == "OperationOutcome"
                assert outcome["issue"][0]["code"] == "transient"
                assert "Traceback" not in r.text
            r = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
            assert r.status_code == 503 and r.headers["Retry-After"]
            server.start()
            # The driver finds the server on its own heartbeat schedule (at most every 500 ms once a
            # request waits): until then each request is still a 503, never another error.
            deadline = time.monotonic() + 30
            while True:
                r = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
                if r.status_code != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 201, r.text
            r = await client.get(r.headers["Location"].split("/fhir", 1)[1])
            assert r.status_code == 200 and r.json()["gender"] == "male"
    finally:
        await app.state.services.store.close()
        server.cleanup()
