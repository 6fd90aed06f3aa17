"""The same workloads on both stores, side by side: the embedded SQLite store and MongoDB.

Workloads (through the store port, with index extraction, as the server runs them): transaction
ingest (batches of resources per unit of work), single creates (one unit of work each), 16 concurrent
creates (each its own unit of work: SQLite's group commit shares their COMMIT), reads by id,
and typical searches (parse + compile + page load): token, string prefix, date range + sort, chain,
_include. The machine baselines are measured in the same run: raw SQLite inserts/s and an indexed
SELECT, raw durable commits/s (synchronous=FULL, one row each), raw MongoDB ``insert_many``/s and
``find_one`` by ``_id`` on the same server (pymongo, no fhir-exchange code), so the table says how
much of each number is the database itself.

MongoDB is ``--mongo URL`` or ``MONGODB_URL``; otherwise a SecantusDB (the MongoDB-compatible
wire-protocol server the tests use, a Python process) is started on 127.0.0.1 for the run, so its
numbers are a lower bound for a real mongod.

    .venv/bin/python bench/bench_stores.py                    # quick: 2,000 resources, 30 runs
    .venv/bin/python bench/bench_stores.py --n 100000 --runs 200 --mongo mongodb://localhost/?replicaSet=rs0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_search import LOINC, baseline, make_resources
from fhir_exchange.definitions import Definitions
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.parse import parse
from fhir_exchange.store.port import NEW, ResourceStore, ResourceVersion

NOW = "2024-01-01T00:00:00.000Z"
TYPES = ("Organization", "Patient", "ServiceRequest", "Task", "Observation")


def _version(r: dict[str, Any]) -> ResourceVersion:
    r["meta"] = {"versionId": "1", "lastUpdated": NOW}
    return ResourceVersion(r["resourceType"], r["id"], 1, NOW, False, orjson.dumps(r), "POST")


def _pcts(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return times[len(times) // 2] * 1000, times[max(0, int(len(times) * 0.95) - 1)] * 1000


async def workloads(store: ResourceStore, defs: Definitions, n: int, runs: int, batch: int
                    ) -> dict[str, tuple[float, float] | float]:
    """Each workload's (p50 ms, p95 ms), or resources/s for the ingests."""
    resources = make_resources(n)
    out: dict[str, tuple[float, float] | float] = {}
    t0 = time.perf_counter()
    for start in range(0, len(resources), batch):
        async with store.transaction() as uow:
            for r in resources[start: start + batch]:
                await uow.put(_version(r), r, expected_version=NEW)
    out["transaction ingest (res/s)"] = len(resources) / (time.perf_counter() - t0)

    times: list[float] = []
    for i in range(runs):
        r = {"resourceType": "Patient", "id": f"new-{i}", "gender": "female", "name": [{"family": "Kim"}]}
        t0 = time.perf_counter()
        async with store.transaction() as uow:
            await uow.put(_version(r), r, expected_version=NEW)
        times.append(time.perf_counter() - t0)
    out["create (1 per unit of work)"] = _pcts(times)

    # 16 creates at once, each its own unit of work (as 16 HTTP clients): on SQLite the units that
    # arrive together share a COMMIT (group commit), so this goes past one fsync per create.
    async def create(i: int) -> None:
        r = {"resourceType": "Patient", "id": f"conc-{i}", "gender": "male", "name": [{"family": "Lee"}]}
        async with store.transaction() as uow:
            await uow.put(_version(r), r, expected_version=NEW)

    t0 = time.perf_counter()
    for k in range(runs):
        await asyncio.gather(*(create(k * 16 + j) for j in range(16)))
    out["concurrent creates x16 (creates/s)"] = runs * 16 / (time.perf_counter() - t0)

    rnd = random.Random(7)
    n_pat = max(1, n // 5)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        got = await store.read("Patient", f"pat-{rnd.randrange(n_pat)}")
        times.append(time.perf_counter() - t0)
        assert got is not None
    out["read by id"] = _pcts(times)

    queries: list[tuple[str, str, Callable[[], list[tuple[str, str]]]]] = [
        ("search token identifier", "Patient", lambda: [("identifier", f"urn:mrn|{100000 + rnd.randrange(n_pat)}")]),
        ("search token code _count=20", "Observation",
         lambda: [("code", f"http://loinc.org|{rnd.choice(LOINC)}"), ("_count", "20")]),
        ("search string prefix name", "Patient",
         lambda: [("name", rnd.choice(["kim", "mul", "김", "elo"])), ("_count", "20")]),
        ("search date range + sort", "Observation",
         lambda: [("date", f"ge2023-{rnd.randint(1, 11):02d}-01"), ("date", "lt2023-12-01"), ("_sort", "-date"),
                  ("_count", "20")]),
        ("search chain subject.identifier", "Observation",
         lambda: [("subject:Patient.identifier", f"urn:mrn|{100000 + rnd.randrange(n_pat)}")]),
        ("search _include subject", "ServiceRequest",
         lambda: [("status", "active"), ("_include", "ServiceRequest:subject"), ("_count", "20")]),
    ]
    for label, type, make in queries:
        times = []
        for _ in range(runs):
            params = make()
            t0 = time.perf_counter()
            await store.search(parse(defs, type, params, default_count=50, max_count=1000))
            times.append(time.perf_counter() - t0)
        out[label] = _pcts(times)
    return out


def durable_commits(tmp: Path, count: int = 200) -> float:
    """Raw SQLite commits/s of one small row each with synchronous=FULL (one fsync per commit): the
    ceiling of creates that each wait for their own commit."""
    import sqlite3

    conn = sqlite3.connect(tmp / "commits.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    t0 = time.perf_counter()
    for _ in range(count):
        conn.execute("INSERT INTO t(v) VALUES (?)", (b"x" * 200,))
    rate = count / (time.perf_counter() - t0)
    conn.close()
    return rate


def mongo_baseline(url: str, n: int) -> tuple[float, float]:
    """Raw pymongo on the same server: insert_many docs/s (one indexed field) and find_one by _id p50 ms."""
    from pymongo import MongoClient

    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with MongoClient(url) as c:
        coll = c[name]["t"]
        coll.create_index("k")
        docs = [{"_id": f"id-{i}", "k": f"key-{i}", "v": b"x" * 200} for i in range(n)]
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            coll.insert_many(docs[start: start + 500])
        rate = n / (time.perf_counter() - t0)
        times = []
        for i in range(200):
            t0 = time.perf_counter()
            coll.find_one({"_id": f"id-{(i * 7919) % n}"})
            times.append(time.perf_counter() - t0)
        c.drop_database(name)
    return rate, statistics.median(times) * 1000


def _mongo_server(url: str | None) -> AbstractContextManager[str]:
    if url:
        return nullcontext(url)
    from tests.mongo_server import SecantusServer

    class _Run:
        def __enter__(self) -> str:
            self.server = SecantusServer()
            self.server.start()
            return self.server.url

        def __exit__(self, *exc: object) -> None:
            self.server.cleanup()

    return _Run()


async def run(n: int, runs: int, batch: int, mongo_url: str | None) -> None:
    from fhir_exchange.store.mongo import MongoStore
    from fhir_exchange.store.sqlite import SqliteStore

    defs = Definitions.load()
    with tempfile.TemporaryDirectory() as d, _mongo_server(mongo_url) as url:
        tmp = Path(d)
        sqlite_raw = baseline(tmp, n)
        commits = durable_commits(tmp)
        mongo_raw = mongo_baseline(url, n)
        sqlite = SqliteStore(tmp / "bench.db", make_indexer(defs))
        await sqlite.open()
        try:
            s_res = await workloads(sqlite, defs, n, runs, batch)
        finally:
            await sqlite.close()
        # The cost of durability: the default synchronous=FULL above, the relaxed NORMAL here.
        relaxed = SqliteStore(tmp / "relaxed.db", make_indexer(defs))
        relaxed.set_synchronous("normal")
        await relaxed.open()
        try:
            normal = await workloads(relaxed, defs, n, runs, batch)
        finally:
            await relaxed.close()
        db = f"bench_{uuid.uuid4().hex[:8]}"
        base, _, query = url.partition("?")
        db_url = base.rstrip("/") + f"/{db}" + (f"?{query}" if query else "")
        mongo = MongoStore(db_url, make_indexer(defs), resource_types=TYPES)
        await mongo.open()
        try:
            m_res = await workloads(mongo, defs, n, runs, batch)
        finally:
            await mongo.close()
            from pymongo import MongoClient

            with MongoClient(url) as c:
                c.drop_database(db)

    kind = "MONGODB_URL/--mongo" if mongo_url else "SecantusDB (started for the run)"
    print(f"\nStores side by side: {n} resources (+ Organization), {runs} runs per workload, "
          f"ingest batches of {batch}; MongoDB: {kind}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'machine baseline':<36}{'SQLite':>22}{'MongoDB':>22}")
    print(f"  {'raw inserts/s':<34}{sqlite_raw[0]:>22,.0f}{mongo_raw[0]:>22,.0f}")
    print(f"  {'raw indexed lookup p50 ms':<34}{sqlite_raw[1]:>22.3f}{mongo_raw[1]:>22.3f}")
    print(f"  {'raw durable commits/s (FULL)':<34}{commits:>22,.0f}{'-':>22}")
    print(f"{'workload':<36}{'SQLite p50 / p95':>22}{'MongoDB p50 / p95':>22}")
    for label, sv in s_res.items():
        mv = m_res[label]
        if isinstance(sv, float) and isinstance(mv, float):
            print(f"  {label:<34}{sv:>22,.0f}{mv:>22,.0f}")
        else:
            assert isinstance(sv, tuple) and isinstance(mv, tuple)
            print(f"  {label:<34}{f'{sv[0]:.2f} / {sv[1]:.2f} ms':>22}{f'{mv[0]:.2f} / {mv[1]:.2f} ms':>22}")
    conc = s_res["concurrent creates x16 (creates/s)"]
    ingest = s_res["transaction ingest (res/s)"]
    assert isinstance(conc, float) and isinstance(ingest, float)
    print("SQLite ratios to the raw figures of this run")
    print(f"  {'concurrent creates / durable commits':<34}{conc / commits:>22.2f}")
    print(f"  {'transaction ingest / raw inserts':<34}{ingest / sqlite_raw[0]:>22.3f}")
    print("SQLite synchronous (default FULL above; FHIR_EXCHANGE_SQLITE_SYNCHRONOUS=normal)")
    for label in ("transaction ingest (res/s)", "create (1 per unit of work)", "concurrent creates x16 (creates/s)"):
        v = normal[label]
        shown = f"{v:,.0f}" if isinstance(v, float) else f"{v[0]:.2f} / {v[1]:.2f} ms"
        print(f"  {label + ', NORMAL':<34}{shown:>22}{'-':>22}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of resources (default 2000: quick)")
    ap.add_argument("--runs", type=int, default=30, help="runs per workload (default 30)")
    ap.add_argument("--batch", type=int, default=200, help="resources per ingest transaction (default 200)")
    ap.add_argument("--mongo", default=os.environ.get("MONGODB_URL"), help="MongoDB URL (default: MONGODB_URL, "
                    "else a SecantusDB started for the run)")
    args = ap.parse_args()
    asyncio.run(run(args.n, args.runs, args.batch, args.mongo))


if __name__ == "__main__":
    main()
