"""Router-level fixtures: Services and Router built directly (no HTTP), with a deterministic clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from fhir_exchange.api.app import build_router, build_services
from fhir_exchange.clock import Clock
from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.interactions.router import Router
from fhir_exchange.interactions.services import Services
from fhir_exchange.settings import Settings

BASE = "http://example.org/fhir"
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class FakeClock:
    """Each ``now()`` is one second after the previous; ids are ``id-1``, ``id-2``, ..."""

    at: datetime = ORIGIN
    step: timedelta = timedelta(seconds=1)
    ids: int = 0
    calls: list[datetime] = field(default_factory=list)

    def now(self) -> datetime:
        self.at += self.step
        self.calls.append(self.at)
        return self.at

    def new_id(self) -> str:
        self.ids += 1
        return f"id-{self.ids}"

    def clock(self) -> Clock:
        return Clock(now=self.now, new_id=self.new_id)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def shared_definitions(definitions: Definitions) -> Definitions:
    """The session's Definitions (their lazy caches are costly to rebuild per test). Tests using them
    must not write conformance resources, which would change them."""
    return definitions


@pytest.fixture
async def services(settings: Settings, fake_clock: FakeClock, shared_definitions: Definitions
                   ) -> AsyncIterator[Services]:
    svc = build_services(settings, shared_definitions, fake_clock.clock())
    generation = shared_definitions.generation
    await svc.store.open()
    try:
        yield svc
    finally:
        await svc.store.close()
    assert shared_definitions.generation == generation, "a test changed the shared Definitions"


@pytest.fixture
def router(services: Services) -> Router:
    return build_router(services)


class Call:
    """``await call("PUT", "Patient/1", body, headers={...})`` -> FhirResponse (raises FhirError)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                       query: list[tuple[str, str]] | None = None) -> FhirResponse:
        req = FhirRequest(method, path, query or [], {k.lower(): v for k, v in (headers or {}).items()}, body, BASE)
        return await self.router.dispatch(req)

    async def error(self, method: str, path: str, body: Any = None, **kw: Any) -> FhirError:
        try:
            resp = await self(method, path, body, **kw)
        except FhirError as err:
            return err
        raise AssertionError(f"expected an error, got {resp.status}: {resp.json()}")


@pytest.fixture
def call(router: Router) -> Call:
    return Call(router)


def doc(resp: FhirResponse) -> dict[str, Any]:
    out = resp.json()
    assert out is not None
    return out


def body_bytes(resp: FhirResponse) -> bytes:
    return resp.body if resp.body is not None else orjson.dumps(resp.resource)
