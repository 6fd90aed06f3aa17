"""Search benchmark on the embedded SQLite store (https://hl7.org/fhir/R4/search.html).

Loads N resources (patients, consults = ServiceRequest + Task, observations) through the store with
index extraction, then times typical searches (parse + SQL + loading the page) and prints a table,
next to a machine baseline measured in the same run (raw SQLite inserts/s, a trivial indexed SELECT).
A second table times combinations of two and three criteria of different selectivity (with and without
``_sort``) against each of their criteria alone with the same result parameters: the ratio is the
combination's median over the median of its most selective criterion (issue 14 aims at 2 or less).

    .venv/bin/python bench/bench_search.py --n 100000
    .venv/bin/python bench/bench_search.py --n 5000 --runs 50     # quick
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhir_exchange.definitions import Definitions
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.parse import parse
from fhir_exchange.store.port import NEW, ResourceVersion
from fhir_exchange.store.sqlite import SqliteStore

FAMILIES = ["Kim", "Lee", "Park", "Choi", "Jung", "Müller", "Schmidt", "김", "이", "박", "Dubois", "Martin"]
GIVEN = ["Minjun", "Seoyeon", "Jörg", "Élodie", "민준", "서연", "Anna", "Tom"]
LOINC = ["8480-6", "8462-4", "8867-4", "29463-7", "8302-2", "2339-0", "718-7", "4548-4"]


def make_resources(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    n_pat = max(1, n // 5)
    n_sr = n // 10
    n_task = n // 10
    n_obs = n - n_pat - n_sr - n_task
    out: list[dict[str, Any]] = []
    out.append({"resourceType": "Organization", "id": "org-0", "name": "Regional Medical Centre",
                "identifier": [{"system": "urn:hira", "value": "12345678"}]})
    for i in range(n_pat):
        out.append({
            "resourceType": "Patient", "id": f"pat-{i}",
            "identifier": [{"system": "urn:mrn", "value": str(100000 + i)}],
            "name": [{"family": rnd.choice(FAMILIES), "given": [rnd.choice(GIVEN)]}],
            "gender": rnd.choice(["male", "female"]),
            "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            "managingOrganization": {"reference": "Organization/org-0"},
            "telecom": [{"system": "phone", "value": f"010-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}"}],
        })
    for i in range(n_sr):
        out.append({
            "resourceType": "ServiceRequest", "id": f"sr-{i}",
            "identifier": [{"system": "urn:placer", "value": f"SR{i}"}],
            "status": rnd.choice(["active", "completed", "draft", "revoked"]), "intent": "order",
            "category": [{"coding": [{"system": "urn:fhir-exchange:consult", "code": "remote-consult"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation"}]},
            "subject": {"reference": f"Patient/pat-{rnd.randrange(n_pat)}"},
            "authoredOn": f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T09:00:00+09:00",
            "performer": [{"reference": "Organization/org-0"}],
        })
    for i in range(n_task):
        out.append({
            "resourceType": "Task", "id": f"task-{i}",
            "status": rnd.choice(["requested", "received", "accepted", "in-progress", "completed"]),
            "intent": "order", "focus": {"reference": f"ServiceRequest/sr-{rnd.randrange(max(1, n_sr))}"},
            "for": {"reference": f"Patient/pat-{rnd.randrange(n_pat)}"},
            "authoredOn": f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T09:00:00+09:00",
            "owner": {"reference": "Organization/org-0"},
        })
    for i in range(n_obs):
        code = rnd.choice(LOINC)
        out.append({
            "resourceType": "Observation", "id": f"obs-{i}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": code},
            "subject": {"reference": f"Patient/pat-{rnd.randrange(n_pat)}"},
            "effectiveDateTime": f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                                 f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00+09:00",
            "valueQuantity": {"value": round(rnd.uniform(40, 200), 1), "unit": "mmHg",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        })
    rnd.shuffle(out)
    return out


def baseline(tmp: Path, n: int) -> tuple[float, float]:
    """Raw SQLite inserts/s (one indexed table, one transaction) and a trivial indexed SELECT in ms."""
    conn = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    conn.execute("CREATE INDEX t_k ON t(k)")
    rows = [(f"key-{i}", b"x" * 200) for i in range(n)]
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t(k, v) VALUES (?, ?)", rows)
    conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        conn.execute("SELECT id, v FROM t WHERE k = ?", (f"key-{(i * 7919) % n}",)).fetchall()
        times.append(time.perf_counter() - t0)
    conn.close()
    return rate, statistics.median(times) * 1000


async def run(n: int, runs: int, batch: int) -> None:
    defs = Definitions.load()
    resources = make_resources(n)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw_rate, raw_select = baseline(tmp, n)
        store = SqliteStore(tmp / "bench.db", make_indexer(defs))
        await store.open()
        now = "2024-01-01T00:00:00.000Z"
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for start in range(0, len(resources), batch):
            async with store.transaction() as uow:
                for r in resources[start : start + batch]:
                    r["meta"] = {"versionId": "1", "lastUpdated": now}
                    v = ResourceVersion(r["resourceType"], r["id"], 1, now, False, orjson.dumps(r), "POST")
                    await uow.put(v, r, expected_version=NEW)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        rate_wall = len(resources) / wall
        rate_cpu = len(resources) / cpu

        rnd = random.Random(7)
        n_pat = max(1, n // 5)
        queries: list[tuple[str, str, Callable[[], list[tuple[str, str]]]]] = [
            ("_id", "Patient", lambda: [("_id", f"pat-{rnd.randrange(n_pat)}")]),
            ("token identifier", "Patient", lambda: [("identifier", f"urn:mrn|{100000 + rnd.randrange(n_pat)}")]),
            ("token code _count=20", "Observation",
             lambda: [("code", f"http://loinc.org|{rnd.choice(LOINC)}"), ("_count", "20")]),
            ("token code _total=none", "Observation",
             lambda: [("code", f"http://loinc.org|{rnd.choice(LOINC)}"), ("_count", "20"), ("_total", "none")]),
            ("string prefix name", "Patient", lambda: [("name", rnd.choice(["kim", "mul", "김", "elo"])),
                                                        ("_count", "20")]),
            ("date range + sort", "Observation",
             lambda: [("date", f"ge2023-{rnd.randint(1, 11):02d}-01"), ("date", "lt2023-12-01"),
                      ("_sort", "-date"), ("_count", "20")]),
            ("reference subject", "Observation", lambda: [("subject", f"Patient/pat-{rnd.randrange(n_pat)}")]),
            ("chained subject.identifier", "Observation",
             lambda: [("subject:Patient.identifier", f"urn:mrn|{100000 + rnd.randrange(n_pat)}")]),
            ("_include subject", "ServiceRequest",
             lambda: [("status", "active"), ("_include", "ServiceRequest:subject"), ("_count", "20")]),
            ("_has reverse chain", "Patient",
             lambda: [("_has:Task:patient:status", "in-progress"), ("_id", f"pat-{rnd.randrange(n_pat)}")]),
        ]
        results: list[tuple[str, float, float, float]] = []
        for label, type, make in queries:
            times = []
            hits = 0
            for _ in range(runs):
                params = make()
                t0 = time.perf_counter()
                q = parse(defs, type, params, default_count=50, max_count=1000)
                res = await store.search(q)
                times.append(time.perf_counter() - t0)
                hits += len(res.matches)
            times.sort()
            results.append((label, times[len(times) // 2] * 1000, times[int(len(times) * 0.95) - 1] * 1000,
                            hits / runs))
        combos = await combinations(store, defs, n, runs)
        await store.close()
        size_mb = (tmp / "bench.db").stat().st_size / 1e6

    print(f"\nFHIR search bench: {len(resources)} resources, {runs} runs per query")
    print(f"{'machine baseline':<34}{'':>12}")
    print(f"  raw SQLite inserts/s            {raw_rate:>12,.0f}")
    print(f"  trivial indexed SELECT p50 ms   {raw_select:>12.3f}")
    print("ingest (index extraction + store, one writer)")
    print(f"  resources/s (wall)              {rate_wall:>12,.0f}")
    print(f"  resources/s per core (CPU time) {rate_cpu:>12,.0f}")
    print(f"  database size MB                {size_mb:>12.1f}")
    print(f"{'query':<34}{'p50 ms':>10}{'p95 ms':>10}{'hits/page':>11}")
    for label, p50, p95, hits in results:
        print(f"  {label:<32}{p50:>10.2f}{p95:>10.2f}{hits:>11.1f}")
    print(f"{'combination':<58}{'p50 ms':>9}{'alone ms':>10}{'ratio':>9}{'total':>9}")
    for label, both, alone, total in combos:
        print(f"  {label:<56}{both:>9.2f}{alone:>10.2f}{both / alone:>9.2f}{total:>9.0f}")


Criteria = list[tuple[str, str]]
# (label, type, criteria drawn per run, result parameters shared by the combination and its criteria)
COMBINATIONS: list[tuple[str, str, Callable[[random.Random, int], Criteria], Criteria]] = [
    ("Patient family + gender", "Patient",
     lambda r, p: [("family", "Kim"), ("gender", "female")], [("_count", "10")]),
    ("Patient family + gender _total=none", "Patient",
     lambda r, p: [("family", "Kim"), ("gender", "female")], [("_count", "10"), ("_total", "none")]),
    ("Patient gender + family (other order)", "Patient",
     lambda r, p: [("gender", "female"), ("family", "Kim")], [("_count", "10")]),
    ("Patient family + gender + birthdate", "Patient",
     lambda r, p: [("family", "Kim"), ("gender", "female"), ("birthdate", "ge2000")], [("_count", "10")]),
    ("Patient family + gender _sort=birthdate", "Patient",
     lambda r, p: [("family", "Kim"), ("gender", "female")], [("_sort", "birthdate"), ("_count", "10")]),
    ("Patient gender + birthdate _sort=-family", "Patient",
     lambda r, p: [("gender", "male"), ("birthdate", "ge2015")], [("_sort", "-family"), ("_count", "10")]),
    ("Patient identifier + gender + name", "Patient",
     lambda r, p: [("identifier", f"urn:mrn|{100000 + r.randrange(p)}"), ("gender", "female"), ("name", "k")],
     [("_count", "10")]),
    ("Patient _id + gender", "Patient",
     lambda r, p: [("_id", f"pat-{r.randrange(p)}"), ("gender", "female")], [("_count", "10")]),
    ("Observation subject + code", "Observation",
     lambda r, p: [("subject", f"Patient/pat-{r.randrange(p)}"), ("code", f"http://loinc.org|{r.choice(LOINC)}")],
     [("_count", "20")]),
    ("Observation code + date + category _sort=-date", "Observation",
     lambda r, p: [("code", f"http://loinc.org|{r.choice(LOINC)}"), ("date", "ge2023-12-20"),
                   ("category", "vital-signs")], [("_sort", "-date"), ("_count", "20")]),
    ("Task status + owner + patient", "Task",
     lambda r, p: [("status", "in-progress"), ("owner", "Organization/org-0"),
                   ("patient", f"Patient/pat-{r.randrange(p)}")], [("_count", "20")]),
]


async def combinations(store: SqliteStore, defs: Definitions, n: int, runs: int,
                       ) -> list[tuple[str, float, float, float]]:
    """(label, p50 of the combination, p50 of its most selective criterion alone, mean total)."""
    rnd = random.Random(11)
    n_pat = max(1, n // 5)
    out: list[tuple[str, float, float, float]] = []

    async def timed(type: str, params: Criteria) -> tuple[float, int]:
        t0 = time.perf_counter()
        res = await store.search(parse(defs, type, params, default_count=50, max_count=1000))
        return time.perf_counter() - t0, res.total or 0

    for label, type, make, extra in COMBINATIONS:
        both: list[float] = []
        best: list[float] = []
        totals = 0
        for _ in range(max(1, runs // 4)):
            crits = make(rnd, n_pat)
            took, total = await timed(type, [*crits, *extra])
            both.append(took)
            totals += total
            best.append(min([(await timed(type, [c, *extra]))[0] for c in crits]))
        out.append((label, statistics.median(both) * 1000, statistics.median(best) * 1000, totals / len(both)))
    return out


def shape_resources(n_pat: int = 500, n_obs: int = 10_000, seed: int = 3) -> list[dict[str, Any]]:
    """The issue 19 data set: ``n_obs`` Observations over ``n_pat`` Patients (nothing else)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = [{
        "resourceType": "Patient", "id": f"pat-{i}", "identifier": [{"system": "urn:mrn", "value": str(100000 + i)}],
        "name": [{"family": rnd.choice(FAMILIES), "given": [rnd.choice(GIVEN)]}],
        "gender": rnd.choice(["male", "female"])} for i in range(n_pat)]
    for i in range(n_obs):
        code = rnd.choice(LOINC)
        out.append({
            "resourceType": "Observation", "id": f"obs-{i}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/pat-{rnd.randrange(n_pat)}"},
            "effectiveDateTime": f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                                 f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00+09:00",
            "valueQuantity": {"value": round(rnd.uniform(40, 200), 1), "unit": "mmHg",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    return out


# (label, type, params drawn per run): the shapes issue 19 names, each with the total, with _total=none
# and with _total=accurate (the default here is accurate: the server counts unless told _total=none).
SHAPES: list[tuple[str, str, Callable[[random.Random, int], Criteria]]] = [
    ("date=ge + _sort=-date _count=20", "Observation",
     lambda r, p: [("date", f"ge2023-{r.randint(1, 11):02d}-01"), ("_sort", "-date"), ("_count", "20")]),
    ("date range + _sort=-date _count=20", "Observation",
     lambda r, p: [("date", f"ge2023-{r.randint(1, 11):02d}-01"), ("date", "lt2023-12-01"), ("_sort", "-date"),
                   ("_count", "20")]),
    ("chain subject:Patient.identifier", "Observation",
     lambda r, p: [("subject:Patient.identifier", f"urn:mrn|{100000 + r.randrange(p)}"), ("_count", "20")]),
    ("chain subject:Patient.family _count=20", "Observation",
     lambda r, p: [("subject:Patient.family", r.choice(FAMILIES)), ("_count", "20")]),
    ("chain subject:Patient.gender _count=20", "Observation",
     lambda r, p: [("subject:Patient.gender", r.choice(["male", "female"])), ("_count", "20")]),
    ("code _count=20", "Observation",
     lambda r, p: [("code", f"http://loinc.org|{r.choice(LOINC)}"), ("_count", "20")]),
    ("subject (reference) _count=20", "Observation",
     lambda r, p: [("subject", f"Patient/pat-{r.randrange(p)}"), ("_count", "20")]),
]


async def shapes(store: SqliteStore, defs: Definitions, n_pat: int, runs: int,
                 ) -> list[tuple[str, float, float, float, float, float]]:
    """(label, p50 and p95 with the total, p50 with _total=none, p50 of a _summary=count, mean total)."""
    out = []
    for label, type, make in SHAPES:
        rnd = random.Random(5)
        timed: dict[str, list[float]] = {"with": [], "none": [], "count": []}
        totals = 0
        for _ in range(runs):
            params = make(rnd, n_pat)
            for mode, extra in (("with", []), ("none", [("_total", "none")]), ("count", [("_summary", "count")])):
                t0 = time.perf_counter()
                res = await store.search(parse(defs, type, [*params, *extra], default_count=50, max_count=1000))
                timed[mode].append(time.perf_counter() - t0)
                if mode == "with":
                    totals += res.total or 0
        w = sorted(timed["with"])
        out.append((label, statistics.median(w) * 1000, w[max(0, int(len(w) * 0.95) - 1)] * 1000,
                    statistics.median(timed["none"]) * 1000, statistics.median(timed["count"]) * 1000,
                    totals / runs))
    return out


async def run_shapes(runs: int, n_obs: int, n_pat: int) -> None:
    """The issue 19 shapes on their own data set, next to the machine baseline of the same run."""
    defs = Definitions.load()
    resources = shape_resources(n_pat, n_obs)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _raw_rate, raw_select = baseline(tmp, len(resources))
        store = SqliteStore(tmp / "shapes.db", make_indexer(defs))
        await store.open()
        now = "2024-01-01T00:00:00.000Z"
        for start in range(0, len(resources), 1000):
            async with store.transaction() as uow:
                for r in resources[start : start + 1000]:
                    r["meta"] = {"versionId": "1", "lastUpdated": now}
                    v = ResourceVersion(r["resourceType"], r["id"], 1, now, False, orjson.dumps(r), "POST")
                    await uow.put(v, r, expected_version=NEW)
        rows = await shapes(store, defs, n_pat, runs)
        await store.close()
    print(f"\nIssue 19 shapes: {n_obs} Observations over {n_pat} Patients, {runs} runs each; "
          f"trivial indexed SELECT p50 {raw_select:.3f} ms (this run)")
    print(f"{'shape':<40}{'p50 ms':>8}{'p95 ms':>8}{'none ms':>9}{'count ms':>10}{'x SELECT':>10}{'total':>8}")
    for label, p50, p95, none, cnt, total in rows:
        print(f"  {label:<38}{p50:>8.2f}{p95:>8.2f}{none:>9.2f}{cnt:>10.2f}{p50 / raw_select:>10.0f}{total:>8.0f}")
    print("  (p50/p95: with the total; none: _total=none; count: _summary=count, the total alone)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="number of resources (default 100000)")
    ap.add_argument("--runs", type=int, default=200, help="runs per query (default 200)")
    ap.add_argument("--batch", type=int, default=500, help="resources per write transaction (default 500)")
    ap.add_argument("--shapes", action="store_true", help="only the issue 19 shapes (10,000 Observations over 500 "
                    "Patients: date range + sort, chains, totals)")
    args = ap.parse_args()
    if args.shapes:
        asyncio.run(run_shapes(args.runs, 10_000, 500))
        return
    asyncio.run(run(args.n, args.runs, args.batch))
    asyncio.run(run_shapes(args.runs, 10_000, 500))


if __name__ == "__main__":
    main()
