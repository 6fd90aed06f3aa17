"""What the operations layer adds per request: the telemetry middleware (request id, metrics, access line)
and the timed store wrapper, against a trivial ASGI app and a trivial store. Not a test (timings are
measured, never asserted); docs/operations.md cites its figures:

    .venv/bin/python tests/ops/measure_overhead.py
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fhir_exchange.api.instrument import TimedStore
from fhir_exchange.api.telemetry import TRAIL_KEY, Telemetry
from fhir_exchange.logs import configure
from fhir_exchange.security.audit import AuditTrail

N = 20000


async def app(scope: Any, receive: Any, send: Any) -> None:
    trail = scope[TRAIL_KEY] = AuditTrail()
    trail.route("read", "Patient", "1")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def send(message: Any) -> None:
    return None


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


class Store:
    name = "trivial"

    async def read(self, type: str, id: str) -> None:
        return None


async def per_request(asgi: Any) -> float:
    scope = {"type": "http", "method": "GET", "path": "/fhir/Patient/1", "headers": [(b"x-request-id", b"abc")]}
    started = time.perf_counter()
    for _ in range(N):
        await asgi(dict(scope), receive, send)
    return (time.perf_counter() - started) / N * 1e6


async def per_read(store: Any) -> float:
    started = time.perf_counter()
    for _ in range(N):
        await store.read("Patient", "1")
    return (time.perf_counter() - started) / N * 1e6


async def main() -> None:
    sink = io.StringIO()
    configure("warning", "json", sink)
    wrapped = Telemetry(app, lambda t: True)
    print(f"trivial app                              {await per_request(app):6.2f} us/request")
    print(f"+ telemetry (no access line: warning)    {await per_request(wrapped):6.2f} us/request")
    configure("info", "json", sink)
    print(f"+ telemetry and a JSON access line       {await per_request(wrapped):6.2f} us/request")
    print(f"trivial store read                       {await per_read(Store()):6.2f} us/call")
    print(f"+ TimedStore                             {await per_read(TimedStore(Store())):6.2f} us/call")  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
