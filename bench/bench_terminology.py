"""Terminology operations benchmark (https://hl7.org/fhir/R4/terminology-service.html).

Type-ahead over the largest loaded ValueSet that can be expanded here: ``ValueSet/$expand?filter=<prefix>
&count=20`` with the prefixes a user sends typing a word of its displays letter by letter (``d``, ``di``,
``dis``, ``disc``; random words, 1 to 4 letters), through the whole application in-process (httpx
ASGITransport: routing, parameters, JSON, no sockets). The same run
measures ``GET /metadata`` and a Patient read by id as the machine's own request cost, so the figure is
also given as a ratio to them; then ``$lookup`` and ``$validate-code`` medians, and the cold expansion
(the first request after the definitions changed, which builds the pick list and its search index).

    .venv/bin/python bench/bench_terminology.py               # 500 runs per row
    .venv/bin/python bench/bench_terminology.py --runs 100    # quick
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.settings import Settings
from fhir_exchange.validation.picklist import service, words


def largest_value_set(defs: Definitions) -> tuple[dict[str, Any], int]:
    """The loaded ValueSet with the most concepts among those expandable here (no open system)."""
    tx = service(defs)
    best: tuple[dict[str, Any], int] | None = None
    for vs in defs.iter("ValueSet"):
        exp = tx.tx.expand_resource(vs)
        if exp.open_systems or exp.all_open:
            continue
        size = sum(len(c) for c in exp.codes.values())
        if best is None or size > best[1]:
            best = (vs, size)
    assert best is not None
    return best


def prefixes(defs: Definitions, vs: dict[str, Any], n: int, seed: int = 7) -> list[str]:
    pick = service(defs).prepare(vs).pick_list(None)
    vocabulary = sorted({w for c in pick.concepts for w in words(c.display or "") if w.isalpha()})
    rnd = random.Random(seed)
    out: list[str] = []
    while len(out) < n:  # a user types a word letter by letter: d, di, dis, disc
        word = rnd.choice(vocabulary)
        out += [word[:k] for k in range(1, min(4, len(word)) + 1)]
    return out[:n]


async def timed(runs: int, call: Callable[[int], Awaitable[httpx.Response]]) -> list[float]:
    out: list[float] = []
    for i in range(runs):
        t = time.perf_counter()
        r = await call(i)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def run(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), auth=False, log_level="warning")
        app = create_app(settings)
        defs: Definitions = app.state.services.definitions
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench/fhir") as http:
            t = time.perf_counter()
            vs, size = largest_value_set(defs)
            scan_s = time.perf_counter() - t
            url = vs["url"]
            typed = prefixes(defs, vs, runs)
            created = await http.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
            pid = created.json()["id"]
            # Cold: a CodeSystem write changes the definitions; the next $expand rebuilds the pick list.
            await http.put("/CodeSystem/bench", json={"resourceType": "CodeSystem", "id": "bench", "status": "active",
                                                      "url": "http://example.org/bench", "content": "complete",
                                                      "concept": [{"code": "a"}]})
            t = time.perf_counter()
            await http.get("/ValueSet/$expand", params={"url": url, "filter": "a", "count": "20"})
            cold_ms = (time.perf_counter() - t) * 1000
            for _ in range(20):  # warm-up
                await http.get("/metadata")
            rows: list[tuple[str, list[float]]] = [
                ("GET /metadata (reference)", await timed(runs, lambda i: http.get("/metadata"))),
                ("GET Patient/[id] (reference)", await timed(runs, lambda i: http.get(f"/Patient/{pid}"))),
            ]
            hits: list[int] = []

            async def typeahead(i: int) -> httpx.Response:
                r = await http.get("/ValueSet/$expand", params={"url": url, "filter": typed[i], "count": "20"})
                hits.append(r.json()["expansion"]["total"])
                return r

            rows.append(("$expand?filter=<typed prefix>&count=20", await timed(runs, typeahead)))
            rows.append(("$expand?count=20 (first page)", await timed(runs, lambda i: http.get(
                "/ValueSet/$expand", params={"url": url, "count": "20"}))))
            code = service(defs).prepare(vs).pick_list(None).concepts
            rows.append(("ValueSet/$validate-code", await timed(runs, lambda i: http.get(
                "/ValueSet/$validate-code", params={"url": url, "system": code[i % size].system,
                                                    "code": code[i % size].code}))))
            rows.append(("CodeSystem/$lookup (v3-ActCode)", await timed(runs, lambda i: http.get(
                "/CodeSystem/$lookup", params={"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                               "code": "AMB"}))))
            rows.append(("CodeSystem/$subsumes (v3-ActCode)", await timed(runs, lambda i: http.get(
                "/CodeSystem/$subsumes", params={"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                 "codeA": "_ActEncounterCode", "codeB": "AMB"}))))
    pick = service(defs).prepare(vs).pick_list(None)
    scans: list[float] = []
    for text in typed:
        t = time.perf_counter()
        pick.search(text, recent=False)
        scans.append((time.perf_counter() - t) * 1000)
    read_p95 = p(rows[1][1], 95)
    meta_p95 = p(rows[0][1], 95)
    print(f"\nTerminology bench, in-process ASGI, {runs} runs per row")
    print(f"largest expandable ValueSet: {url} ({size} concepts; found in {scan_s:.1f} s over every loaded ValueSet)")
    print(f"cold $expand after a definitions change (pick list + index built): {cold_ms:.1f} ms")
    print(f"type-ahead matches per prefix: median {statistics.median(hits):.0f}, max {max(hits)}")
    print(f"filter look-up without the recent-results cache (buckets + scan): p50 {p(scans, 50):.2f} ms, "
          f"p95 {p(scans, 95):.2f} ms")
    print(f"{'request':<40}{'p50 ms':>9}{'p95 ms':>9}{'p95/read':>10}{'p95/meta':>10}")
    for label, values in rows:
        print(f"  {label:<38}{p(values, 50):>9.2f}{p(values, 95):>9.2f}"
              f"{p(values, 95) / read_p95:>10.2f}{p(values, 95) / meta_p95:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500, help="requests per row (default 500)")
    args = ap.parse_args()
    asyncio.run(run(args.runs))


if __name__ == "__main__":
    main()
