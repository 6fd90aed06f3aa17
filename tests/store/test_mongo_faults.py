"""MongoDB faults and query plans, on SecantusDB processes of the tests' own (no mocks).

- Killing the database (SIGKILL) during a write load and restarting it loses no acknowledged write:
  every write the store returned from is read back, byte for byte, afterwards.
- The main query shapes are served by an index (``explain``), as docs/scaling.md says.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.store.mongo import MongoStore
from fhir_exchange.store.port import NEW, VersionConflict
from tests.mongo_server import SecantusServer, fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.store.contract import SYS, StoreContract, make_version, ts


@pytest.fixture
def own_server() -> Iterator[SecantusServer]:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("kills and restarts a SecantusDB of its own")
    server = SecantusServer(durable=True)  # --sync-on-commit: acknowledged means on disk (docs/mongodb.md)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_kill_and_restart_during_writes_loses_no_acknowledged_write(own_server: SecantusServer) -> None:
    store = MongoStore(own_server.url + "load?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
                       resource_types=("Patient",))
    await store.open()
    acked: dict[tuple[str, int], bytes] = {}
    transient = 0
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal transient
        version = 0
        n = 0
        while not stop.is_set():
            n += 1
            id = f"w{w}"
            v, doc = make_version("Patient", id, version + 1, ts(n % 3000), name=[{"text": f"{w}-{n}"}])
            try:
                async with store.transaction() as uow:
                    cur = await uow.read("Patient", id)
                    if (cur.version_id if cur else 0) != version:  # an unacknowledged write did commit
                        version = cur.version_id if cur else 0
                        continue
                    await uow.put(v, doc, expected_version=version or NEW)
            except FhirError as err:
                assert err.category in (Category.TRANSIENT, Category.CONFLICT), err.diagnostics
                transient += 1
                await asyncio.sleep(0.05)
                continue
            version += 1
            acked[(id, version)] = v.body

    tasks = [asyncio.create_task(writer(w)) for w in range(6)]
    try:
        await asyncio.sleep(1.0)
        before = len(acked)
        own_server.kill()
        await asyncio.sleep(0.5)
        own_server.start()
        deadline = time.monotonic() + 15
        while len(acked) < before + 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        assert before > 0 and len(acked) >= before + 30, (before, len(acked))
        print(f"\nacknowledged before kill {before}, total {len(acked)}, transient errors {transient}")
        assert transient > 0  # the kill was felt
        for (id, version), body in acked.items():
            got = await store.vread("Patient", id, version)
            assert got is not None and got.body == body, (id, version)
        for w in range(6):
            latest = max(v for (i, v) in acked if i == f"w{w}")
            cur = await store.read("Patient", f"w{w}")
            assert cur is not None and cur.version_id >= latest
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await store.close()


# -- query plans -------------------------------------------------------------------------------------

@pytest.fixture
async def populated(fresh_db_url: str) -> AsyncIterator[str]:  # noqa: F811
    store = MongoStore(fresh_db_url, indexer=StoreContract().indexer, resource_types=("Patient",))
    await store.open()
    try:
        for n in range(30):
            v, doc = make_version("Patient", f"p{n}", 1, ts(n), identifier=[{"system": SYS, "value": f"v{n}"}])
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=NEW)
        v, doc = make_version("Patient", "p0", 2, ts(40))
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=1)
    finally:
        await store.close()
    yield fresh_db_url


def _plan(explained: dict[str, Any]) -> str:
    return str(explained.get("queryPlanner", {}).get("winningPlan", explained))


SHAPES: dict[str, tuple[str, dict[str, Any], list[tuple[str, int]] | None]] = {
    "read by id": ("Patient", {"_id": "p3"}, None),
    "search by token system|code": ("Patient", {"_s.tok": {"$in": [f"identifier|{SYS}|v3"]}}, None),
    "search by token code": ("Patient", {"_s.tokc": {"$in": ["identifier|v3"]}}, None),
    "search by _id": ("Patient", {"_s.tokc": {"$in": ["_id|p3", "_id|p4"]}}, None),
    "list a type in creation order": ("Patient", {"del": False}, [("del", 1), ("_c", 1)]),
    "vread": ("history", {"_id": "Patient/p0/_history/1"}, None),
    "instance history": ("history", {"t": "Patient", "i": "p0"}, [("t", 1), ("i", 1), ("v", -1)]),
    "type history": ("history", {"t": "Patient"}, None),
    "system history": ("history", {"lu": {"$gte": ts(10)}}, None),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_main_query_shapes_use_an_index(populated: str, shape: str) -> None:
    coll, filt, sort = SHAPES[shape]
    with MongoClient(populated) as c:
        cursor = c.get_default_database()[coll].find(filt)
        if sort:
            cursor = cursor.sort(sort)
        plan = _plan(cursor.explain())
    assert "IXSCAN" in plan or "IDHACK" in plan or "EXPRESS" in plan, plan
    assert "COLLSCAN" not in plan, plan


async def test_the_compiled_token_search_uses_an_index(populated: str) -> None:
    """The filter the adapter compiles (not a hand-written one) is index-served."""
    from fhir_exchange.store.mongo_search import Compiler
    from tests.store.contract import by_identifier

    async def no_staging(type: str, filt: dict[str, Any], projection: dict[str, Any]) -> list[dict[str, Any]]:
        raise AssertionError("a token search needs no staged query")

    filt = await Compiler(no_staging).filter(by_identifier("Patient", "v3").params, "Patient")
    with MongoClient(populated) as c:
        plan = _plan(c.get_default_database()["Patient"].find(filt).explain())
    assert "IXSCAN" in plan and "COLLSCAN" not in plan, plan


# Compiled FHIR searches (parse + the MongoDB compiler, chains and _has staged) and the index that
# serves their final filter. Equalities on indexed arrays are index-served on every server; ranges
# inside $elemMatch (string prefix, dates, quantities) get tight multikey bounds on mongod, while
# SecantusDB's planner scans for any $elemMatch, so those shapes are asserted with MONGODB_URL only.
SEARCH_SHAPES: dict[str, tuple[str, list[tuple[str, str]], str, bool]] = {
    "token system|code": ("Patient", [("identifier", "urn:mrn|1")], "s_tok", False),
    "token code": ("Patient", [("gender", "male")], "s_tokc", False),
    "token |code": ("Observation", [("status", "|final")], "s_tokn", False),
    "_id": ("Patient", [("_id", "p1,p2")], "s_tokc", False),
    "string :exact": ("Patient", [("family:exact", "Kim1")], "s_strx", False),
    "reference": ("Observation", [("subject", "Patient/p1")], "s_ref", False),
    "chain": ("Observation", [("subject:Patient.identifier", "urn:mrn|1")], "s_ref", False),
    "_has": ("Patient", [("_has:Observation:subject:code", "8480-6")], "s_tokc", False),
    ":missing=false": ("Observation", [("subject:missing", "false")], "s_has", False),
    "compartment": ("Observation", [("patient", "p1")], "s_refi", False),
    "string prefix": ("Patient", [("name", "ki")], "s_str", True),
    "date range": ("Observation", [("date", "ge2023-06")], "s_date", True),
    "quantity": ("Observation", [("value-quantity", "gt80")], "s_qty", True),
}


@pytest.fixture
async def searchable(fresh_db_url: str, definitions: Any) -> AsyncIterator[MongoStore]:  # noqa: F811
    from fhir_exchange.search.extract import make_indexer

    store = MongoStore(fresh_db_url, indexer=make_indexer(definitions), resource_types=("Patient", "Observation"))
    await store.open()
    try:
        for n in range(20):
            pat = {"resourceType": "Patient", "id": f"p{n}", "gender": "male" if n % 2 else "female",
                   "identifier": [{"system": "urn:mrn", "value": str(n)}], "name": [{"family": f"Kim{n}"}]}
            obs = {"resourceType": "Observation", "id": f"o{n}", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                   "subject": {"reference": f"Patient/p{n}"}, "effectiveDateTime": f"2023-{n % 12 + 1:02d}-01",
                   "valueQuantity": {"value": 60 + n * 5, "unit": "mmHg"}}
            async with store.transaction() as uow:
                for r in (pat, obs):
                    v, doc = make_version(r["resourceType"], r["id"], 1, ts(n), **{
                        k: val for k, val in r.items() if k not in ("resourceType", "id")})
                    await uow.put(v, doc, expected_version=NEW)
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("shape", list(SEARCH_SHAPES))
async def test_compiled_search_shapes_use_their_index(searchable: MongoStore, definitions: Any, shape: str) -> None:
    from fhir_exchange.search.parse import parse
    from fhir_exchange.store.mongo_search import Compiler

    type, params, index, mongod_only = SEARCH_SHAPES[shape]
    query = parse(definitions, type, params, strict=True)
    filt = await Compiler(searchable._finder(None)).filter(query.params, type)
    assert (await searchable.search(query)).total, shape  # the shape finds something
    if mongod_only and not os.environ.get("MONGODB_URL"):
        # SecantusDB's planner scans any $elemMatch; mongod serves a range inside $elemMatch on a multikey
        # field from that field's index. Here: the filter has exactly that form on the indexed field.
        field = "_s." + index.removeprefix("s_")
        assert field in str(filt) and "$elemMatch" in str(filt), filt
        return
    with MongoClient(searchable.url) as c:
        plan = _plan(c.get_default_database()[type].find(filt).explain())
    assert "IXSCAN" in plan and f"'{index}'" in plan and "COLLSCAN" not in plan, (filt, plan)


async def test_version_conflict_is_not_transient(fresh_db_url: str) -> None:  # noqa: F811
    store = MongoStore(fresh_db_url)
    await store.open()
    try:
        v, doc = make_version("Patient", "p", 1, ts(1))
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)
        with pytest.raises(VersionConflict) as info:
            async with store.transaction() as uow:
                await uow.put(v, doc, expected_version=NEW)
        assert info.value.status == 409
    finally:
        await store.close()
