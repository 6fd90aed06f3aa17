"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve FHIR requests), outside the FHIR base.

A process manager restarts a process whose ``/healthz`` fails; a load balancer sends no requests to
one whose ``/readyz`` answers 503. Ready means:

- ``store``: the store answers a cheap call (the newest change-feed seq: one index lookup) within two
  seconds (a slower call is awaited again by the next probe rather than cancelled), and for SQLite
  the database file is still the one opened at start (a file deleted or replaced under a running
  server would take its writes into an unlinked file);
- ``definitions``: the FHIR definitions are loaded (the core Patient StructureDefinition resolves);
- ``feed``: the change feed follower polled successfully recently (it is how definitions written
  through another process arrive); stale after ``max(10 * feed_interval, 10 s)``.

The body is JSON: ``{"status": "ok" | "unavailable", "checks": {name: "ok" | what failed}}``. Both
answer without authentication and reveal nothing about the data.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_exchange.interactions.services import Services

PATIENT = "http://hl7.org/fhir/StructureDefinition/Patient"
STORE_TIMEOUT = 2.0


def _json(body: dict[str, object], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _retrieve(probe: asyncio.Future[int]) -> None:
    """Its outcome is read here, so a probe that failed after its waiter gave up is not reported unread."""
    if not probe.cancelled():
        probe.exception()


class Health:
    def __init__(self, svc: Services, feed_stale_after: float) -> None:
        self.svc = svc
        self.feed_stale_after = feed_stale_after
        self._feed_ok: float | None = None  # monotonic time of the last successful poll
        self._file: tuple[str, int, int] | None = None  # SQLite: (path, device, inode) at start
        self._probe: asyncio.Future[int] | None = None  # the store call of the current or last check

    def started(self) -> None:
        """Called once the store is open and the feed positioned (the app's start-up)."""
        self._feed_ok = time.monotonic()
        path = getattr(self.svc.store, "path", None)
        if isinstance(path, str) and path != ":memory:" and os.path.exists(path):
            st = os.stat(path)
            self._file = (path, st.st_dev, st.st_ino)

    def feed_polled(self) -> None:
        self._feed_ok = time.monotonic()

    async def healthz(self, request: Request) -> Response:
        response = _json({"status": "ok"}, 200)
        response.headers["X-Worker"] = str(os.getpid())  # which worker process answered (serve --workers N)
        return response

    async def readyz(self, request: Request) -> Response:
        checks = {"store": await self.check_store(), "definitions": self.check_definitions(),
                  "feed": self.check_feed()}
        ready = all(v == "ok" for v in checks.values())
        return _json({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    async def check_store(self) -> str:
        if self._file is not None:
            path, dev, ino = self._file
            try:
                st = os.stat(path)
            except OSError:
                return f"the database file {Path(path).name} is gone"
            if (st.st_dev, st.st_ino) != (dev, ino):
                return f"the database file {Path(path).name} was replaced after start (restart the server)"
        # A slow call is not cancelled, but awaited again by the next probe: a store whose first call after
        # an outage does lasting work (the MongoDB adapter creates its indexes) would never finish it if
        # every probe cut it off after two seconds.
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self.svc.store.last_change())
            self._probe.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), STORE_TIMEOUT)
        except TimeoutError:
            return f"the store did not answer within {STORE_TIMEOUT:g} s"
        except Exception as exc:  # whatever the adapter raises, the answer is "not ready"
            return f"the store is unreachable: {type(exc).__name__}"
        return "ok"

    def check_definitions(self) -> str:
        try:
            loaded = self.svc.definitions.resolve(PATIENT) is not None
        except Exception as exc:
            return f"the definitions cannot be read: {type(exc).__name__}"
        return "ok" if loaded else "the core definitions are not loaded"

    def check_feed(self) -> str:
        if self._feed_ok is None:
            return "not started"
        age = time.monotonic() - self._feed_ok
        if age > self.feed_stale_after:
            return f"no successful poll of the change feed for {age:.0f} s"
        return "ok"
