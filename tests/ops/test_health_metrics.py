"""/healthz, /readyz, /metrics and the landing page, on the real app with its lifespan and a SQLite file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.api.metrics import allowed_networks
from fhir_exchange.consult.profiles import TASK_CODE_SYSTEM
from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir import jsonio
from fhir_exchange.settings import Settings
from fhir_exchange.store.port import NEW, ResourceVersion
from tests.conftest import CACHE_DIR
from tests.mongo_server import SecantusServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


async def test_healthz_and_readyz_when_all_is_well(ops_client: httpx.AsyncClient) -> None:
    health = await ops_client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await ops_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"store": "ok", "definitions": "ok", "feed": "ok"}}
    assert ready.headers["x-request-id"]


async def test_readyz_is_503_naming_the_store_when_the_database_file_is_gone(
        started_app: Starlette, ops_client: httpx.AsyncClient, settings: Settings) -> None:
    db = Path(settings.data_dir) / "fhir.db"
    assert db.exists()
    os.rename(db, db.with_suffix(".moved"))
    ready = await ops_client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert "gone" in body["checks"]["store"] and body["checks"]["definitions"] == "ok"
    assert (await ops_client.get("/healthz")).status_code == 200  # alive, just not ready


async def test_readyz_is_503_while_mongodb_is_unreachable_and_200_once_it_is_up(
        tmp_path: Path, definitions: Definitions) -> None:
    if os.environ.get("MONGODB_URL"):
        pytest.skip("starts its own SecantusDB")
    server = SecantusServer()  # not started yet: the store is unreachable
    settings = Settings(data_dir=tmp_path, cache_dir=str(CACHE_DIR), auth=False,
                        store_url=server.url + "ready?serverSelectionTimeoutMS=300&heartbeatFrequencyMS=500")
    app = create_app(settings, definitions=definitions)
    await app.state.services.store.open()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            down = await c.get("/readyz")
            assert down.status_code == 503
            assert down.json()["checks"]["store"].startswith("the store is unreachable")
            assert (await c.get("/healthz")).status_code == 200
            server.start()
            deadline = time.monotonic() + 60  # the driver finds the server at its next heartbeat
            while (up := (await c.get("/readyz")).json())["checks"]["store"] != "ok":
                assert time.monotonic() < deadline, up
                await asyncio.sleep(0.2)
    finally:
        await app.state.services.store.close()
        server.cleanup()


async def test_readyz_is_503_when_the_change_feed_is_stuck(started_app: Starlette,
                                                          ops_client: httpx.AsyncClient) -> None:
    health = started_app.state.health
    assert (await ops_client.get("/readyz")).json()["checks"]["feed"] == "ok"
    health.feed_stale_after = 0.0  # no poll since the start is now too old
    ready = await ops_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["feed"].startswith("no successful poll of the change feed for")
    health.feed_polled()  # what the follower reports after each successful poll
    health.feed_stale_after = 10.0
    assert (await ops_client.get("/readyz")).status_code == 200


async def test_metrics_count_requests_by_interaction_type_and_status(ops_client: httpx.AsyncClient) -> None:
    before = await scrape(ops_client)
    fhir = "/fhir"
    created = await ops_client.post(f"{fhir}/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201
    pid = created.json()["id"]
    for _ in range(3):
        assert (await ops_client.get(f"{fhir}/Patient/{pid}")).status_code == 200
    assert (await ops_client.get(f"{fhir}/Patient", params={"gender": "female"})).status_code == 200
    assert (await ops_client.get(f"{fhir}/Patient/nope")).status_code == 404
    assert (await ops_client.get(f"{fhir}/Unicorn/1")).status_code == 404
    bad = await ops_client.post(f"{fhir}/Patient", json={"resourceType": "Patient", "gender": "robot"})
    assert bad.status_code in (400, 422)
    after = await scrape(ops_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "fhir_exchange_requests_total"
    assert delta(total, interaction="create", type="Patient", status="201") == 1
    assert delta(total, interaction="read", type="Patient", status="200") == 3
    assert delta(total, interaction="read", type="Patient", status="404") == 1
    assert delta(total, interaction="search-type", type="Patient", status="200") == 1
    assert delta(total, interaction="create", type="Patient", status=str(bad.status_code)) == 1
    # An unknown type is not a label value a client can make up.
    assert not any(dict(labels).get("type") == "Unicorn" for _, labels in after)
    assert delta(total, interaction="read", type="unknown", status="404") == 1
    assert delta("fhir_exchange_request_duration_seconds_count", interaction="read") == 5
    assert delta("fhir_exchange_store_duration_seconds_count", operation="transaction") >= 1
    assert delta("fhir_exchange_store_duration_seconds_count", operation="search") >= 1
    assert delta("fhir_exchange_validation_duration_seconds_count") >= 2
    assert ("fhir_exchange_open_consults", ()) in after
    assert ("fhir_exchange_subscription_delivery_failures_total", ()) in after
    assert ("fhir_exchange_audit_pending", ()) in after
    assert ("fhir_exchange_audit_oldest_pending_seconds", ()) in after


async def test_open_consults_counts_consult_tasks_in_an_open_status(started_app: Starlette,
                                                                   ops_client: httpx.AsyncClient) -> None:
    store = started_app.state.services.store

    async def task(status: str, code: str = "consult") -> None:
        # Written straight to the store: the gauge counts through the search index, whoever wrote.
        tid = f"t-{status}-{code}"
        doc = {"resourceType": "Task", "id": tid, "status": status, "intent": "order",
               "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": code}]}}
        v = ResourceVersion("Task", tid, 1, "2026-01-01T00:00:00Z", False, jsonio.dumps(doc), "PUT", None)
        async with store.transaction() as uow:
            await uow.put(v, doc, expected_version=NEW)

    assert value(await scrape(ops_client), "fhir_exchange_open_consults") == 0
    for status in ("requested", "accepted", "in-progress", "completed", "cancelled", "rejected"):
        await task(status)
    await task("requested", code="follow-up")
    assert value(await scrape(ops_client), "fhir_exchange_open_consults") == 3


async def test_metrics_refused_outside_metrics_allow(started_app: Starlette) -> None:
    route = next(r for r in started_app.routes if getattr(r, "path", None) == "/metrics")
    endpoint = route.endpoint.__self__  # type: ignore[attr-defined]
    assert endpoint.allow == allowed_networks(("127.0.0.0/8", "::1"))  # the default: loopback only
    endpoint.allow = allowed_networks(("10.0.0.0/8", "192.168.1.7"))
    for address, status in (("127.0.0.1", 403), ("10.1.2.3", 200), ("192.168.1.7", 200), ("192.168.1.8", 403)):
        transport = httpx.ASGITransport(app=started_app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/metrics")).status_code == status, address
    assert allowed_networks(("*",)) is None
    with pytest.raises(ValueError, match="metrics_allow"):
        allowed_networks(("not-an-address",))


async def test_landing_page_links_the_fhir_base_metadata_portal_and_docs(ops_client: httpx.AsyncClient) -> None:
    page = await ops_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for href in ('href="/fhir"', 'href="/fhir/metadata"', 'href="/portal"', 'href="/docs/operations.md"',
                 'href="/healthz"', 'href="https://hl7.org/fhir/R4/"'):
        assert href in text, href
    assert (await ops_client.get("/fhir/metadata")).json()["resourceType"] == "CapabilityStatement"
    doc = await ops_client.get("/docs/operations.md")
    assert doc.status_code == 200 and "systemd" in doc.text
    assert (await ops_client.get("/docs/..%2Fpyproject.toml")).status_code == 404
    assert (await ops_client.get("/docs/nothing.md")).status_code == 404


async def test_request_id_is_echoed_or_made_up(ops_client: httpx.AsyncClient) -> None:
    echoed = await ops_client.get("/fhir/metadata", headers={"X-Request-Id": "emr-7f3a:42"})
    assert echoed.headers["x-request-id"] == "emr-7f3a:42"
    forged = await ops_client.get("/fhir/metadata", headers={"X-Request-Id": 'x" injected=1'})
    assert forged.headers["x-request-id"] != 'x" injected=1' and len(forged.headers["x-request-id"]) == 32
    error = await ops_client.get("/fhir/Patient/absent", headers={"X-Request-Id": "r-404"})
    assert error.status_code == 404 and error.headers["x-request-id"] == "r-404"
