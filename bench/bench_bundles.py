"""Ingest of transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction) in resources/s, next
to the raw SQLite insert rate of the same machine measured in the same run.

    .venv/bin/python bench/bench_bundles.py [--bundles 100] [--entries 1000] [--http] [--no-profile]

Each Bundle holds Patients (POST with a ``urn:uuid`` fullUrl) and Observations referring to them, so
the run exercises id assignment, reference rewriting, validation, index extraction and the one unit
of work per Bundle. Validation is on in every row, as the server runs: the core definitions; the
"KR Core Patient required" row also loads KR Core and requires its Patient profile of every Patient
(``required_profiles``), so each Patient is also walked against the profile. The baseline inserts
the same JSON bytes into a bare table of a WAL SQLite file, one transaction per Bundle: the ceiling
the store could approach. ``--http`` also posts the Bundles
through the ASGI app (httpx, in process) to show the cost of the HTTP edge.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from fhir_exchange.api.app import build_router, build_services, load_definitions
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.settings import Settings

CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "fhir-packages"
KR_CORE = Path(__file__).resolve().parent.parent / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"
KR_PATIENT = "Patient=http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-patient"


def make_bundle(b: int, entries: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i in range(entries // 2):
        pid = f"urn:uuid:{uuid.uuid4()}"
        out.append({"fullUrl": pid, "request": {"method": "POST", "url": "Patient"}, "resource": {
            "resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.410.100.1", "value": f"{b}-{i}"}],
            "name": [{"text": "Kim Minjun", "family": "Kim", "given": ["Minjun"]}], "gender": "male",
            "birthDate": "1950-03-01"}})
        out.append({"request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": pid}, "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def raw_sqlite(path: Path, bundles: list[dict[str, Any]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE r (type TEXT, id TEXT, version INTEGER, body BLOB, PRIMARY KEY (type, id))")
    rows = [[(e["resource"]["resourceType"], str(uuid.uuid4()), 1, orjson.dumps(e["resource"]))
             for e in b["entry"]] for b in bundles]
    started = time.perf_counter()
    for batch in rows:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO r VALUES (?,?,?,?)", batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


async def router_ingest(data: Path, bundles: list[dict[str, Any]], profile: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the ingest alone; ``profile``: KR Core Patient required."""
    extra: dict[str, Any] = {"packages": (str(KR_CORE),), "required_profiles": (KR_PATIENT,)} if profile else {}
    settings = Settings(data_dir=data, cache_dir=str(CACHE), auth=False, **extra)
    svc = build_services(settings, load_definitions(settings))
    router = build_router(svc)
    await svc.store.open()
    try:
        # One small Bundle first, not timed: the validator's compiled shapes and profiles are built on first use.
        warm = await router.dispatch(FhirRequest("POST", "", headers={"prefer": "return=minimal"},
                                                 body=make_bundle(-1, 20), base_url="http://bench/fhir"))
        assert warm.status == 200, warm.body
        started, cpu = time.perf_counter(), time.process_time()
        for b in bundles:
            resp = await router.dispatch(FhirRequest("POST", "", headers={"prefer": "return=minimal"}, body=b,
                                                     base_url="http://bench/fhir"))
            assert resp.status == 200, resp.body
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await svc.store.close()


async def http_ingest(data: Path, bundles: list[dict[str, Any]]) -> tuple[float, float]:
    import httpx

    from fhir_exchange.api.app import create_app

    app = create_app(Settings(data_dir=data, cache_dir=str(CACHE), max_body_bytes=512 * 1024 * 1024, auth=False))
    await app.state.services.store.open()
    try:
        bodies = [orjson.dumps(b) for b in bundles]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench/fhir",
                                     timeout=600) as c:
            started, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                r = await c.post("", content=body, headers={"content-type": "application/fhir+json",
                                                             "prefer": "return=minimal"})
                assert r.status_code == 200, r.text[:500]
            return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await app.state.services.store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bundles", type=int, default=100)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--http", action="store_true", help="also ingest through the ASGI app with httpx")
    ap.add_argument("--no-profile", action="store_true", help="skip the row with KR Core Patient required")
    args = ap.parse_args()
    total = args.bundles * (args.entries // 2 * 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundles = [make_bundle(b, args.entries) for b in range(args.bundles)]
        cpus: dict[str, float] = {}
        rows: list[tuple[str, float]] = [("raw SQLite insert (baseline)", raw_sqlite(root / "raw.db", bundles))]
        name = "transaction Bundles via router"
        wall, cpus[name] = asyncio.run(router_ingest(root / "router", bundles))
        rows.append((name, wall))
        if not args.no_profile and KR_CORE.exists():
            name = "  same, KR Core Patient required"
            fresh = [make_bundle(b, args.entries) for b in range(args.bundles)]
            wall, cpus[name] = asyncio.run(router_ingest(root / "profiled", fresh, profile=True))
            rows.append((name, wall))
        if args.http:
            fresh = [make_bundle(b, args.entries) for b in range(args.bundles)]
            wall, cpus["transaction Bundles via HTTP (ASGI)"] = asyncio.run(http_ingest(root / "http", fresh))
            rows.append(("transaction Bundles via HTTP (ASGI)", wall))
    print(f"\n{args.bundles} transaction Bundles x {args.entries} entries = {total} resources\n")
    print(f"{'path':<38} {'seconds':>9} {'resources/s':>12} {'vs raw':>8} {'res/CPU-s':>10}")
    base = rows[0][1]
    for name, secs in rows:
        cpu = cpus.get(name)
        print(f"{name:<38} {secs:>9.2f} {total / secs:>12.0f} {base / secs:>8.1%} "
              f"{f'{total / cpu:,.0f}' if cpu else '-':>10}")
    print("validation on in every row (core definitions; the KR Core row also the profile on each Patient)")
    print("res/CPU-s: resources per second of this process's CPU time (figures that hold on a busy machine; "
          "the writer thread included)")


if __name__ == "__main__":
    main()
