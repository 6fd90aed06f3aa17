"""Issue 14, "Search input answered 500 or hanging" (https://hl7.org/fhir/R4/search.html#errors).

The hostile inputs of the issue each get a 400 OperationOutcome naming the limit, at once, on SQLite
and on MongoDB (SecantusDB); a search past a tiny deadline is a 503 with Retry-After while a plain read
still answers; an abandoned search stops in the store (SQLite: the reader is free again at once). The
same over a real ``fhir-exchange serve`` process: hostile inputs by GET and by POST ``_search``, and a
client that gives up on costly searches leaves no reader busy behind it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.limits import SETTING, SearchLimits
from fhir_exchange.search.parse import parse
from fhir_exchange.settings import Settings
from fhir_exchange.store import open_store
from fhir_exchange.store.port import NEW, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore
from tests.conftest import CACHE_DIR
from tests.e2e.conftest import Server, start_server
from tests.mongo_server import fresh_db_url, mongo_url  # noqa: F401 - fixtures

FAST = 2.0  # seconds a refusal may take on a loaded two-core machine (the refused queries ran minutes)


def _values(n: int, prefix: str = "v") -> str:
    return ",".join(f"{prefix}{i}" for i in range(n))


# (what the issue sent, type, parameters, the limit the answer must name)
HOSTILE: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("1,000 AND'd criteria", "Patient", [("gender", "female")] * 1000, "max_criteria"),
    ("1,000 _has criteria", "Patient", [("_has:Observation:patient:code", "x")] * 1000, "max_criteria"),
    ("1,000 chains", "Observation", [("subject:Patient.name", "x")] * 1000, "max_criteria"),
    ("10,000 OR values", "Patient", [("family", _values(10_000))], "max_values"),
    ("600 OR values over 6 criteria", "Patient", [("family", _values(100))] * 6, "max_values_total"),
    ("5,000 sort keys", "Patient", [("_sort", ",".join(["family", "-birthdate"] * 2500))], "max_sort_keys"),
    ("500 sort keys", "Patient", [("_sort", ",".join(["given"] * 500))], "max_sort_keys"),
    ("a chain 4 deep", "Observation",
     [("subject:Patient.organization.partof.partof.name", "x")], "max_chain_depth"),
    ("_has 3 deep", "Patient",
     [("_has:Observation:patient:_has:Provenance:target:_has:AuditEvent:entity:action", "C")], "max_has_depth"),
    ("50 _include", "Patient", [("_include", "Patient:organization")] * 50, "max_includes"),
    ("a 9,000-character value", "Patient", [("family", "x" * 9000)], "max_query_length"),
]


def assert_refused(resp: httpx.Response, limit: str) -> None:
    assert resp.status_code == 400, resp.text[:500]
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == "too-costly"
    assert limit in issue["diagnostics"] and SETTING[limit] in issue["diagnostics"], issue


def patients(n: int, seed: int = 5) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    for i in range(n):
        yield {"resourceType": "Patient", "id": f"p{i}", "gender": rnd.choice(["male", "female"]),
               "name": [{"family": rnd.choice(["Kang", "Lam", "Park", "Chae"]) + str(i % 97), "given": ["Ann"]}],
               "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"}


async def populate(url: str, definitions: Definitions, n: int) -> None:
    """``n`` Patients written through the store (index extraction and all), as the server would."""
    store = open_store(url, make_indexer(definitions), ["Patient", "Observation"])
    await store.open()
    now = "2024-01-01T00:00:00.000Z"
    batch: list[dict[str, Any]] = []
    try:
        for r in patients(n):
            batch.append(r)
            if len(batch) == 500 or r["id"] == f"p{n - 1}":
                async with store.transaction() as uow:
                    for b in batch:
                        b["meta"] = {"versionId": "1", "lastUpdated": now}
                        await uow.put(ResourceVersion("Patient", b["id"], 1, now, False, orjson.dumps(b), "POST"), b,
                                      expected_version=NEW)
                batch = []
    finally:
        await store.close()


# A search that costs tenths of a second on a few thousand Patients, within every limit: 500 OR'd
# substring values (only the last of each 100 matches, and it matches every Patient), each checked on
# every row, and 3 sort keys.
SLOW_VALUES = ",".join([*(f"zq{i}" for i in range(99)), "a"])
SLOW = [("name:contains", SLOW_VALUES), ("family:contains", SLOW_VALUES), ("given:contains", SLOW_VALUES),
        ("phonetic:contains", SLOW_VALUES), ("name:contains", SLOW_VALUES), ("_sort", "-family,given,birthdate")]


def _settings(tmp_path: Path, store_url: str = "", **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False, store_url=store_url, **kw)


async def _app(settings: Settings) -> Starlette:
    app = create_app(settings)
    await app.state.services.store.open()
    return app


@pytest.fixture(params=["sqlite", "mongodb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fhir.db'}"
    return str(request.getfixturevalue("fresh_db_url"))


@pytest.fixture
async def client(store_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = await _app(_settings(tmp_path, store_url))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir", timeout=60) as c:
            yield c
    finally:
        await app.state.services.store.close()


async def test_hostile_searches_are_refused_at_once(client: httpx.AsyncClient) -> None:
    for label, type, params, limit in HOSTILE:
        t0 = time.monotonic()
        body = str(httpx.QueryParams(params))
        if len(body) < 60_000:  # httpx refuses longer URLs
            assert_refused(await client.get(f"/{type}?{body}"), limit)
        # POST [type]/_search: the same parameters in a form body, the same limits.
        assert_refused(await client.post(f"/{type}/_search", content=body.encode(),
                                         headers={"content-type": "application/x-www-form-urlencoded"}), limit)
        assert time.monotonic() - t0 < 2 * FAST, label


async def test_searches_at_the_limits_still_run(client: httpx.AsyncClient) -> None:
    d = SearchLimits()
    at_limits = {
        "criteria": [("gender", "female,male,other")] * d.max_criteria,
        "values": [("family", _values(d.max_values - 1) + ",Kim1")],
        "sort keys": [("_sort", ",".join(["family", "-birthdate", "given", "_id"] * (d.max_sort_keys // 4)))],
        "chain": [("general-practitioner:Practitioner.name", "x")],
        "_has": [("_has:Observation:patient:_has:Provenance:target:agent", "Device/x")],
    }
    for label, params in at_limits.items():
        r = await client.get("/Patient", params=params)
        assert r.status_code == 200, (label, r.text[:300])


async def test_limits_are_settings(tmp_path: Path) -> None:
    app = await _app(_settings(tmp_path, search_max_criteria=2, search_max_sort_keys=1))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir") as c:
            assert (await c.get("/Patient", params=[("gender", "male"), ("family", "K")])).status_code == 200
            assert_refused(await c.get("/Patient", params=[("gender", "male"), ("family", "K"), ("given", "A")]),
                           "max_criteria")
            assert_refused(await c.get("/Patient", params={"_sort": "family,given"}), "max_sort_keys")
    finally:
        await app.state.services.store.close()


async def test_deadline_is_503_while_a_plain_read_answers(store_url: str, tmp_path: Path,
                                                          definitions: Definitions) -> None:
    """Four costly searches at once, past a tiny deadline: each a 503 with Retry-After (never a 500 or
    a wait for the search to finish), and a plain read made meanwhile answers at once."""
    n = 3000 if store_url.startswith("sqlite") else 400  # SecantusDB is far slower per document
    await populate(store_url, definitions, n)
    app = await _app(_settings(tmp_path, store_url, search_timeout=0.05))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/fhir",
                                     timeout=60) as c:
            async def timed(coro: Any) -> tuple[httpx.Response, float]:
                t0 = time.monotonic()
                r = await coro
                return r, time.monotonic() - t0

            async def read_later() -> tuple[httpx.Response, float]:
                await asyncio.sleep(0.02)  # while the searches run
                return await timed(c.get("/Patient/p7"))

            *searches, (read, read_took) = await asyncio.gather(
                *(timed(c.get("/Patient", params=SLOW)) for _ in range(4)), read_later())
        for r, took in searches:
            assert r.status_code == 503, r.text[:300]
            assert r.headers["retry-after"].isdigit()
            issue = r.json()["issue"][0]
            assert issue["code"] == "timeout" and "FHIR_EXCHANGE_SEARCH_TIMEOUT" in issue["diagnostics"]
            assert took < FAST
        assert read.status_code == 200 and read.json()["id"] == "p7"
        assert read_took < FAST / 2
    finally:
        await app.state.services.store.close()


async def test_cancelled_search_frees_its_sqlite_reader(tmp_path: Path, definitions: Definitions) -> None:
    """The awaiting task cancelled (what the server does when the client goes away): the statement
    stops in SQLite, so the one reader thread takes the next search at once, not after the first."""
    path = tmp_path / "fhir.db"
    await populate(f"sqlite:///{path}", definitions, 3000)
    store = SqliteStore(path, make_indexer(definitions), readers=1)
    store.search_timeout = 60
    await store.open()
    try:
        slow, cheap = parse(definitions, "Patient", SLOW), parse(definitions, "Patient", [("_id", "p1")])
        t0 = time.monotonic()
        await store.search(slow)
        whole = time.monotonic() - t0
        task = asyncio.ensure_future(store.search(slow))
        await asyncio.sleep(whole / 10)
        task.cancel()
        t0 = time.monotonic()
        assert len((await store.search(cheap)).matches) == 1
        assert time.monotonic() - t0 < whole / 3, whole
        assert task.cancelled()
    finally:
        await store.close()


# -- a real server process ------------------------------------------------------------------------


@pytest.fixture
async def loaded_server(tmp_path: Path, definitions: Definitions) -> AsyncIterator[Server]:
    data = tmp_path / "data"
    await populate(f"sqlite:///{data / 'fhir.db'}", definitions, 3000)
    srv = start_server(data)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)


async def test_real_server_refuses_hostile_searches_and_drops_abandoned_ones(loaded_server: Server) -> None:
    base = loaded_server.base
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for label, type, params, limit in HOSTILE:
            t0 = time.monotonic()
            body = str(httpx.QueryParams(params))
            # Long queries go in a POST _search body: uvicorn refuses request lines over 16 KiB itself.
            if len(body) < 12_000:
                resp = await c.get(f"/{type}?{body}")
            else:
                resp = await c.post(f"/{type}/_search", content=body.encode(),
                                    headers={"content-type": "application/x-www-form-urlencoded"})
            assert_refused(resp, limit)
            assert time.monotonic() - t0 < FAST, label
        t0 = time.monotonic()
        assert (await c.get("/Patient", params=SLOW)).status_code == 200
        whole = time.monotonic() - t0
        # Clients that give up on costly searches (more of them than the server has readers for
        # searches): if they went on running, the next search would wait for them.
        async def abandon() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=whole / 10) as quitter:
                with pytest.raises(httpx.TimeoutException):
                    await quitter.get("/Patient", params=SLOW)

        await asyncio.gather(*(abandon() for _ in range(6)))
        await asyncio.sleep(0.05)  # the server sees the connections close
        t0 = time.monotonic()
        r = await c.get("/Patient", params={"family": "Kang1", "gender": "female"})
        assert r.status_code == 200
        assert time.monotonic() - t0 < whole, whole
