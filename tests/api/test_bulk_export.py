"""Bulk data export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): kick-off at system, Patient and
Group level, polling, the manifest, NDJSON files, cancellation, scopes and isolation, over HTTP against
the real app with authentication on (two institutions, each with its own client), a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from fhir_exchange.api.app import create_app
from fhir_exchange.definitions import Definitions
from fhir_exchange.interactions.export_job import Exports, Job, NdjsonWriter
from fhir_exchange.settings import Settings
from tests.conftest import CACHE_DIR
from tests.consult.scenario import MovableClock
from tests.mongo_server import fresh_db_url, mongo_url  # noqa: F401 - fixtures
from tests.security.conftest import BASE, Institution, enrol, token_form

pytestmark = pytest.mark.asyncio(loop_scope="module")
ASYNC = {"Prefer": "respond-async"}
LOINC = "http://loinc.org"


@dataclass
class World:
    app: Starlette
    folder: Path
    a: httpx.AsyncClient  # institution A, system/*.cruds
    b: httpx.AsyncClient  # institution B
    inst_a: Institution
    anonymous: httpx.AsyncClient

    async def client(self, who: Institution, scope: str) -> httpx.AsyncClient:
        r = await self.anonymous.post("/auth/token", data=token_form(who.client_id, who.pem, scope))
        assert r.status_code == 200, r.text
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE,
                                 headers={"Authorization": f"Bearer {r.json()['access_token']}"})


def observation(patient: str | None, code: str) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": LOINC, "code": code}]}}
    if patient:
        obs["subject"] = {"reference": f"Patient/{patient}"}
    return obs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("bulk")
    settings = Settings(data_dir=tmp, cache_dir=str(CACHE_DIR), auth=True, rate_limit=0)
    app = create_app(settings, definitions=definitions)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        inst_a = await enrol(app, "A hospital", "41000001")
        inst_b = await enrol(app, "B hospital", "41000002")
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as anonymous:
            world = World(app, tmp / "exports", None, None, inst_a, anonymous)  # type: ignore[arg-type]
            world.a = await world.client(inst_a, "system/*.cruds")
            world.b = await world.client(inst_b, "system/*.cruds")
            for i in range(3):
                r = await world.a.put(f"/Patient/pa{i}", json={"resourceType": "Patient", "id": f"pa{i}",
                                                                "gender": "female" if i else "male"})
                assert r.status_code == 201, r.text
                for code in ("2345-7", "718-7"):
                    r = await world.a.post("/Observation", json=observation(f"pa{i}", code))
                    assert r.status_code == 201, r.text
            r = await world.a.post("/Observation", json=observation(None, "2345-7"))  # in no patient's compartment
            assert r.status_code == 201, r.text
            members = [{"entity": {"reference": "Patient/pa0"}}, {"entity": {"reference": "Patient/pa1"}}]
            r = await world.a.put("/Group/ga", json={"resourceType": "Group", "id": "ga", "type": "person",
                                                     "actual": True, "member": members})
            assert r.status_code == 201, r.text
            r = await world.b.put("/Patient/pb0", json={"resourceType": "Patient", "id": "pb0"})
            assert r.status_code == 201, r.text
            r = await world.b.post("/Observation", json=observation("pb0", "2345-7"))
            assert r.status_code == 201, r.text
            try:
                yield world
            finally:
                await world.a.aclose()
                await world.b.aclose()


def local(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE):]


async def kickoff(http: httpx.AsyncClient, path: str, params: dict[str, str] | None = None) -> str:
    r = await http.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return local(r.headers["content-location"])


async def finish(http: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    for _ in range(200):
        r = await http.get(status_url)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/json")
            manifest: dict[str, Any] = r.json()
            return manifest
        assert r.headers["retry-after"] and "x-progress" in r.headers
        await asyncio.sleep(0.02)
    raise AssertionError("the export did not finish")


async def files(http: httpx.AsyncClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The resources of every output file, by type, checking each file against its manifest entry."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        r = await http.get(local(entry["url"]))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = r.content.splitlines()
        assert len(lines) == entry["count"]
        resources = [orjson.loads(line) for line in lines]
        assert all(res["resourceType"] == entry["type"] for res in resources)
        out.setdefault(entry["type"], []).extend(resources)
    return out


async def search_ids(http: httpx.AsyncClient, query: str) -> set[str]:
    r = await http.get(query + ("&" if "?" in query else "?") + "_count=1000")
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


async def test_system_export_matches_search(world: World) -> None:
    manifest = await finish(world.a, await kickoff(world.a, "/$export", {"_type": "Patient,Observation,Group"}))
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/$export?_type=Patient,Observation,Group")
    got = await files(world.a, manifest)
    for type in ("Patient", "Observation", "Group"):
        r = await world.a.get(f"/{type}", params={"_summary": "count"})
        assert sum(e["count"] for e in manifest["output"] if e["type"] == type) == r.json()["total"]
        assert {res["id"] for res in got[type]} == await search_ids(world.a, f"/{type}")
    assert {p["id"] for p in got["Patient"]} == {"pa0", "pa1", "pa2"}  # never B's patient
    assert len(got["Observation"]) == 7


async def test_b_sees_only_its_own_in_its_export(world: World) -> None:
    got = await files(world.b, await finish(world.b, await kickoff(world.b, "/$export",
                                                                     {"_type": "Patient,Observation"})))
    assert [p["id"] for p in got["Patient"]] == ["pb0"]
    assert [o["subject"]["reference"] for o in got["Observation"]] == ["Patient/pb0"]


async def test_patient_level_exports_compartments(world: World) -> None:
    got = await files(world.a, await finish(world.a, await kickoff(world.a, "/Patient/$export",
                                                                     {"_type": "Patient,Observation"})))
    assert len(got["Patient"]) == 3
    assert len(got["Observation"]) == 6  # the Observation without a subject is in no compartment
    assert {o["subject"]["reference"] for o in got["Observation"]} == {"Patient/pa0", "Patient/pa1", "Patient/pa2"}
    r = await world.a.get("/Patient/$export", params={"_type": "Organization"}, headers=ASYNC)
    assert r.status_code == 400 and "compartment" in r.text


async def test_group_export_and_isolation(world: World) -> None:
    got = await files(world.a, await finish(world.a, await kickoff(world.a, "/Group/ga/$export")))
    assert {p["id"] for p in got["Patient"]} == {"pa0", "pa1"}
    assert {o["subject"]["reference"] for o in got["Observation"]} == {"Patient/pa0", "Patient/pa1"}
    assert len(got["Observation"]) == 4
    r = await world.b.get("/Group/ga/$export", headers=ASYNC)  # B cannot see A's Group
    assert r.status_code == 404, r.text


async def test_since_and_type_filter(world: World) -> None:
    first = await finish(world.a, await kickoff(world.a, "/$export", {"_type": "Observation"}))
    r = await world.a.post("/Observation", json=observation("pa2", "2093-3"))
    assert r.status_code == 201
    new_id = r.json()["id"]
    since = await finish(world.a, await kickoff(world.a, "/$export", {"_type": "Observation",
                                                                       "_since": first["transactionTime"]}))
    assert [o["id"] for o in (await files(world.a, since))["Observation"]] == [new_id]
    # Two _typeFilter queries are ORed, and a resource both match is written once.
    filters = {"_type": "Observation,Patient",
               "_typeFilter": f"Observation?code={LOINC}|718-7,Observation?subject=Patient/pa2,Patient?gender=male"}
    got = await files(world.a, await finish(world.a, await kickoff(world.a, "/$export", filters)))
    expected = (await search_ids(world.a, f"/Observation?code={LOINC}|718-7")
                | await search_ids(world.a, "/Observation?subject=Patient/pa2"))
    ids = [o["id"] for o in got["Observation"]]
    assert len(ids) == len(set(ids)) and set(ids) == expected and len(ids) == 5
    assert [p["id"] for p in got["Patient"]] == ["pa0"]


async def test_scopes(world: World) -> None:
    patients_only = await world.client(world.inst_a, "system/Patient.rs")
    async with patients_only:
        manifest = await finish(patients_only, await kickoff(patients_only, "/$export"))
        assert {e["type"] for e in manifest["output"]} == {"Patient"}
        r = await patients_only.get("/$export?_outputFormat=application/fhir+ndjson", headers=ASYNC)  # '+' unencoded
        assert r.status_code == 202, r.text
        r = await patients_only.get("/$export", params={"_type": "Observation"}, headers=ASYNC)
        assert r.status_code == 403 and "system/Observation.rs" in r.text
        # The institution's files, but a token that does not cover their type: 403.
        full = await finish(world.a, await kickoff(world.a, "/$export", {"_type": "Patient,Observation"}))
        urls = {e["type"]: local(e["url"]) for e in full["output"]}
        assert (await patients_only.get(urls["Patient"])).status_code == 200
        assert (await patients_only.get(urls["Observation"])).status_code == 403
    read_only = await world.client(world.inst_a, "system/Patient.r")
    async with read_only:
        r = await read_only.get("/$export", params={"_type": "Patient"}, headers=ASYNC)
        assert r.status_code == 403, r.text
    r = await world.anonymous.get("/$export", headers=ASYNC)
    assert r.status_code == 401


async def test_other_institution_cannot_poll_download_or_cancel(world: World) -> None:
    status = await kickoff(world.a, "/$export", {"_type": "Patient"})
    manifest = await finish(world.a, status)
    file_url = local(manifest["output"][0]["url"])
    for method, url in (("GET", status), ("DELETE", status), ("GET", file_url)):
        r = await world.b.request(method, url)
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome", (method, url, r.text)
    r = await world.anonymous.get(file_url)
    assert r.status_code == 401
    assert (await world.a.get(file_url)).status_code == 200  # still there for A
    r = await world.a.get(status.replace("/bulk-status/", "/bulk-files/") + "/..%2F..%2Ffhir.db")
    assert r.status_code == 404


async def test_cancel_removes_files_and_status(world: World) -> None:
    status = await kickoff(world.a, "/$export", {"_type": "Patient,Observation"})
    job_id = status.rsplit("/", 1)[1]
    manifest = await finish(world.a, status)
    assert (world.folder / job_id).is_dir()
    r = await world.a.delete(status)
    assert r.status_code == 202, r.text
    assert not (world.folder / job_id).exists()
    assert (await world.a.get(status)).status_code == 404
    assert (await world.a.get(local(manifest["output"][0]["url"]))).status_code == 404
    assert (await world.a.delete(status)).status_code == 404
    # Cancelled while running: the job stops at its next page and leaves nothing behind.
    status = await kickoff(world.a, "/$export")
    assert (await world.a.delete(status)).status_code == 202
    await asyncio.sleep(0.2)
    assert not (world.folder / status.rsplit("/", 1)[1]).exists()
    assert (await world.a.get(status)).status_code == 404


@pytest.mark.parametrize(("params", "headers", "needle"), [
    ({}, {}, "respond-async"),
    ({"_outputFormat": "text/csv"}, ASYNC, "_outputFormat"),
    ({"_since": "yesterday"}, ASYNC, "_since"),
    ({"_since": "2026-01-01"}, ASYNC, "_since"),
    ({"_type": "Unicorn"}, ASYNC, "Unicorn"),
    ({"_typeFilter": "Observation?_count=5", "_type": "Observation"}, ASYNC, "_count"),
    ({"_typeFilter": "Observation?bogus=1", "_type": "Observation"}, ASYNC, "bogus"),
    ({"_typeFilter": "Patient?gender=male", "_type": "Observation"}, ASYNC, "not exported"),
    ({"_typeFilter": "Observation"}, ASYNC, "Type?criteria"),
])
async def test_bad_parameters(world: World, params: dict[str, str], headers: dict[str, str], needle: str) -> None:
    r = await world.a.get("/$export", params=params, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome" and needle in r.text


async def test_levels_and_post(world: World) -> None:
    for path in ("/Observation/$export", "/Patient/pa0/$export", "/Group/$export"):
        r = await world.a.get(path, headers=ASYNC)
        assert r.status_code == 404, (path, r.text)
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient"},
                                                         {"name": "_outputFormat", "valueString": "ndjson"},
                                                         {"name": "_elements", "valueString": "id"}]}
    r = await world.a.post("/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    manifest = await finish(world.a, local(r.headers["content-location"]))
    assert [e["count"] for e in manifest["output"]] == [3]
    assert len(manifest["error"]) == 1  # _elements ignored, said in the error file
    r = await world.a.get(local(manifest["error"][0]["url"]))
    assert "_elements" in orjson.loads(r.content.splitlines()[0])["issue"][0]["diagnostics"]
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/pa0"}}]}
    r = await world.a.post("/$export", json=body, headers=ASYNC)
    assert r.status_code == 400 and "patient" in r.text


async def test_stalled_job_reports_an_error(world: World) -> None:
    exports: Exports = world.app.state.exports
    job = Job(id="stalled-1", request=f"{BASE}/$export", base_url=BASE, level="system", types=["Patient"],
              transaction_time="2026-01-01T00:00:00.000Z", institution=world.inst_a.organization, client_id=None,
              requires_token=True, expires="2999-01-01T00:00:00.000Z", heartbeat="2026-01-01T00:00:00.000Z")
    await exports.save(job)
    r = await world.a.get("/bulk-status/stalled-1")
    assert r.status_code == 500 and "heartbeat" in r.text
    assert (await world.b.get("/bulk-status/stalled-1")).status_code == 404


async def test_audit_records_kickoff_and_download(world: World) -> None:
    manifest = await finish(world.a, await kickoff(world.a, "/$export", {"_type": "Group"}))
    file_path = local(manifest["output"][0]["url"])
    assert (await world.a.get(file_path)).status_code == 200
    r = await world.a.get("/AuditEvent", params={"_count": "1000"})
    queries = [base64.b64decode(e["query"]).decode() for entry in r.json()["entry"]
               for e in entry["resource"].get("entity", []) if "query" in e]
    assert any(q.startswith("GET /fhir/$export?_type=Group") for q in queries)
    assert any(q.startswith(f"GET /fhir{file_path}?_jobId=") for q in queries)


async def test_capability_statement_declares_export(world: World) -> None:
    statement = (await world.a.get("/metadata")).json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} \
        in statement["rest"][0]["operation"]


async def test_writer_flushes_every_page(tmp_path: Path) -> None:
    writer = NdjsonWriter(tmp_path, "Patient", max_per_file=3)
    writer.write_page([b'{"resourceType":"Patient","id":"1"}', b'{"resourceType":"Patient","id":"2"}'])
    assert (tmp_path / "Patient-1.ndjson").read_bytes().count(b"\n") == 2  # on disk before the next page
    writer.write_page([b'{"resourceType":"Patient","id":"3"}', b'{"resourceType":"Patient","id":"4"}'])
    assert (tmp_path / "Patient-2.ndjson").read_bytes() == b'{"resourceType":"Patient","id":"4"}\n'
    writer.close()
    assert writer.files == [("Patient-1.ndjson", 3), ("Patient-2.ndjson", 1)]


async def test_pages_of_one_instant_and_other_workers(settings: Settings, definitions: Definitions) -> None:
    """Resources written in one transaction share lastUpdated instants: keyset paging over them loses and
    repeats nothing. A second app on the same SQLite file (another worker) polls, downloads and cancels."""
    n = 250
    entries = [{"resource": {"resourceType": "Patient", "id": f"t{i}"},
                "request": {"method": "PUT", "url": f"Patient/t{i}"}} for i in range(n)]
    first, second = create_app(settings, definitions=definitions), create_app(settings, definitions=definitions)
    first.state.exports.page = 100  # pages of 100 (1,000 by default): three pages, ties between them
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        one = httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url=BASE)
        two = httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url=BASE)
        async with one, two:
            r = await one.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
            assert r.status_code == 200, r.text
            status = await kickoff(one, "/$export", {"_type": "Patient"})
            manifest = await finish(two, status)  # polled through the other worker
            ids = [p["id"] for p in (await files(two, manifest))["Patient"]]
            assert len(ids) == n and len(set(ids)) == n
            assert (await two.delete(status)).status_code == 202
            assert (await one.get(status)).status_code == 404
            assert manifest["requiresAccessToken"] is False  # authentication off


async def test_on_mongodb(tmp_path: Path, fresh_db_url: str, definitions: Definitions) -> None:  # noqa: F811
    """The same export on a MongoDB store (SecantusDB, or MONGODB_URL): job records in the database,
    files in the folder ``export_dir`` names; Patient and Group level go through chains and _has there too."""
    settings = Settings(data_dir=tmp_path / "data", store_url=fresh_db_url, cache_dir=str(CACHE_DIR), auth=False,
                        export_dir=str(tmp_path / "shared-exports"))
    app = create_app(settings, definitions=definitions)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        for i in range(3):
            r = await http.put(f"/Patient/m{i}", json={"resourceType": "Patient", "id": f"m{i}"})
            assert r.status_code == 201
            assert (await http.post("/Observation", json=observation(f"m{i}", "2345-7"))).status_code == 201
        assert (await http.post("/Observation", json=observation(None, "2345-7"))).status_code == 201
        group = {"resourceType": "Group", "id": "mg", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": "Patient/m2"}}]}
        assert (await http.put("/Group/mg", json=group)).status_code == 201
        system = await files(http, await finish(http, await kickoff(http, "/$export", {"_type": "Observation"})))
        assert len(system["Observation"]) == 4
        patients = await files(http, await finish(http, await kickoff(http, "/Patient/$export",
                                                                        {"_type": "Patient,Observation"})))
        assert len(patients["Patient"]) == 3 and len(patients["Observation"]) == 3
        status = await kickoff(http, "/Group/mg/$export", {"_type": "Patient,Observation"})
        members = await files(http, await finish(http, status))
        assert [p["id"] for p in members["Patient"]] == ["m2"]
        assert [o["subject"]["reference"] for o in members["Observation"]] == ["Patient/m2"]
        assert (tmp_path / "shared-exports" / status.rsplit("/", 1)[1] / "Patient-1.ndjson").is_file()


async def test_resources_after_the_transaction_time_wait_for_the_next_export(settings: Settings,
                                                                             definitions: Definitions) -> None:
    """transactionTime bounds the export: a version written later (here: on a clock ahead, then set back)
    is not in the files; the next export with _since=transactionTime has it. Jobs expire."""
    clock = MovableClock()
    app = create_app(settings, definitions=definitions, clock=clock.clock())
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        assert (await http.put("/Patient/now", json={"resourceType": "Patient", "id": "now"})).status_code == 201
        clock.offset = timedelta(hours=1)
        assert (await http.put("/Patient/later", json={"resourceType": "Patient", "id": "later"})).status_code == 201
        clock.offset = timedelta(0)
        manifest = await finish(http, await kickoff(http, "/$export", {"_type": "Patient"}))
        assert [p["id"] for p in (await files(http, manifest))["Patient"]] == ["now"]
        clock.offset = timedelta(hours=2)
        since = await finish(http, await kickoff(http, "/$export", {"_type": "Patient",
                                                                     "_since": manifest["transactionTime"]}))
        assert [p["id"] for p in (await files(http, since))["Patient"]] == ["later"]
        # Past the retention (a day by default) the job is gone, and its files go at the next kick-off.
        status = await kickoff(http, "/$export", {"_type": "Patient"})
        await finish(http, status)
        folder = settings.data_dir / "exports" / status.rsplit("/", 1)[1]
        assert folder.is_dir()
        clock.offset = timedelta(days=2)
        assert (await http.get(status)).status_code == 404
        await finish(http, await kickoff(http, "/$export", {"_type": "Patient"}))
        assert not folder.exists()


async def test_a_worker_that_stops_fails_its_jobs(settings: Settings, definitions: Definitions) -> None:
    """The worker running a job shuts down mid-export: the job reads as failed through the other worker."""
    first, second = create_app(settings, definitions=definitions), create_app(settings, definitions=definitions)
    first.state.exports.page = 1  # 40 pages: the job is still running when its worker stops
    entries = [{"resource": {"resourceType": "Patient", "id": f"s{i}"},
                "request": {"method": "PUT", "url": f"Patient/s{i}"}} for i in range(40)]
    async with second.router.lifespan_context(second), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url=BASE) as two:
        async with first.router.lifespan_context(first), \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url=BASE) as one:
            r = await one.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
            assert r.status_code == 200, r.text
            status = await kickoff(one, "/$export", {"_type": "Patient"})
        r = await two.get(status)
        assert r.status_code == 500 and "server stopped" in r.text, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
