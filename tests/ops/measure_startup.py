"""Start-up time on a large store: ``create_app`` and the lifespan start, on an empty store and on N Patients.

Not a test (timings are measured, never asserted); docs/operations.md cites its figures:

    .venv/bin/python tests/ops/measure_startup.py 100000 /tmp/startup     # fills /tmp/startup/big once (~1 min)
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fhir_exchange.api.app import build_services, create_app, load_definitions  # noqa: E402
from fhir_exchange.fhir import jsonio  # noqa: E402
from fhir_exchange.settings import Settings  # noqa: E402
from fhir_exchange.store.port import NEW, ResourceVersion  # noqa: E402

CACHE = str(ROOT / ".pytest_cache" / "fhir-packages")


async def fill(data: Path, n: int) -> None:
    """``n`` indexed Patients written straight to the store, 1,000 per transaction."""
    settings = Settings(data_dir=data, cache_dir=CACHE, auth=False)
    svc = build_services(settings, load_definitions(settings))
    await svc.open()
    started = time.perf_counter()
    for b in range(0, n, 1000):
        async with svc.store.transaction() as uow:
            for i in range(b, min(b + 1000, n)):
                doc = {"resourceType": "Patient", "id": f"p{i}", "gender": "female",
                       "identifier": [{"system": "urn:x", "value": f"m{i}"}], "name": [{"family": f"F{i}"}]}
                await uow.put(ResourceVersion("Patient", f"p{i}", 1, "2026-01-01T00:00:00Z", False,
                                              jsonio.dumps(doc), "PUT", None), doc, expected_version=NEW)
    print(f"filled {n} Patients in {time.perf_counter() - started:.1f} s", flush=True)
    await svc.close()


async def start(data: Path) -> None:
    settings = Settings(data_dir=data, cache_dir=CACHE, auth=False)
    t0 = time.perf_counter()
    app = create_app(settings)
    t1 = time.perf_counter()
    async with app.router.lifespan_context(app):
        t2 = time.perf_counter()
    print(f"{data.name}: create_app {t1 - t0:.2f} s, lifespan start {t2 - t1:.3f} s", flush=True)


async def main(n: int, root: Path) -> None:
    big = root / "big"
    if not (big / "fhir.db").exists():
        await fill(big, n)
    for _ in range(2):
        await start(root / "empty")
        await start(big)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
