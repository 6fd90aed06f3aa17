"""Every interaction of the REST core over HTTP (httpx against the ASGI app), for a spread of types."""

from __future__ import annotations

import asyncio
import re
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import oo
from tests.api.minimal import MinimalFactory

# Not conformance types (StructureDefinition, Questionnaire...): writing those changes the shared Definitions;
# test_all_types.py covers them with an app of its own.
SPREAD = ["Patient", "Observation", "Organization", "ServiceRequest", "Task", "Consent", "Communication",
          "DocumentReference", "Bundle", "Encounter", "Medication", "Parameters", "Binary", "Group"]
SYS = "urn:oid:1.2.410.200"
PATIENT: dict[str, Any] = {"resourceType": "Patient", "gender": "female", "name": [{"family": "Lee"}]}


def strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (doc.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def path_of(location: str) -> str:
    return location.split("/fhir/", 1)[1]


@pytest.mark.parametrize("type", SPREAD)
async def test_full_lifecycle(client: httpx.AsyncClient, minimal: MinimalFactory, type: str) -> None:
    body = minimal.make(type)
    created = await client.post(f"/{type}", json=body)
    assert created.status_code == 201, created.text
    doc = created.json()
    rid = doc["id"]
    assert created.headers["location"] == f"http://test/fhir/{type}/{rid}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert parsedate_to_datetime(created.headers["last-modified"]).year >= 2024
    assert strip_meta(doc) == body

    read = await client.get(f"/{type}/{rid}")
    assert read.status_code == 200 and read.json() == doc
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"] == created.headers["last-modified"]

    changed = {**doc, "language": "ko"}
    updated = await client.put(f"/{type}/{rid}", json=changed)
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2" and updated.json()["language"] == "ko"
    assert updated.headers["etag"] == 'W/"2"'

    patched = await client.patch(f"/{type}/{rid}", content=b'[{"op": "remove", "path": "/language"}]',
                                 headers={"content-type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert "language" not in patched.json() and patched.headers["etag"] == 'W/"3"'

    v2 = await client.get(f"/{type}/{rid}/_history/2")
    assert v2.status_code == 200 and v2.json()["language"] == "ko" and v2.headers["etag"] == 'W/"2"'

    hist = (await client.get(f"/{type}/{rid}/_history")).json()
    assert hist["resourceType"] == "Bundle" and hist["type"] == "history" and hist["total"] == 3
    assert [e["request"]["method"] for e in hist["entry"]] == ["PATCH", "PUT", "POST"]

    type_hist = (await client.get(f"/{type}/_history")).json()
    assert type_hist["total"] == 3

    deleted = await client.delete(f"/{type}/{rid}")
    assert deleted.status_code == 200
    oo(deleted)
    gone = await client.get(f"/{type}/{rid}")
    assert gone.status_code == 410
    oo(gone)
    assert (await client.get(f"/{type}/{rid}/_history/1")).json() == doc
    assert (await client.get(f"/{type}/{rid}/_history/4")).status_code == 410

    recreated = await client.put(f"/{type}/{rid}", json=doc)
    assert recreated.status_code == 201 and recreated.json()["meta"]["versionId"] == "5"


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    resp = await client.put("/Patient/kr-123", json={**PATIENT, "id": "kr-123"})
    assert resp.status_code == 201
    assert resp.headers["location"] == "http://test/fhir/Patient/kr-123/_history/1"
    assert (await client.get("/Patient/kr-123")).status_code == 200


async def test_search_type_and_system(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.post("/Patient", json={**PATIENT, "identifier": [{"system": SYS, "value": str(n)}]})
    found = (await client.get("/Patient", params={"identifier": f"{SYS}|1"})).json()
    assert found["type"] == "searchset" and found["total"] == 1
    assert found["entry"][0]["resource"]["identifier"][0]["value"] == "1"
    everything = (await client.get("/Patient")).json()
    assert everything["total"] == 3
    posted = (await client.post("/Patient/_search", content=f"identifier={SYS}|2",
                                headers={"content-type": "application/x-www-form-urlencoded"})).json()
    assert posted["total"] == 1


# -- conditional and concurrency ----------------------------------------------------------------------

async def test_if_match_and_if_none_match(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/p1", json={**PATIENT, "id": "p1"})
    stale = await client.put("/Patient/p1", json={**PATIENT, "id": "p1"}, headers={"If-Match": 'W/"0"'})
    assert stale.status_code == 412
    oo(stale)
    ok = await client.put("/Patient/p1", json={**PATIENT, "id": "p1", "active": True}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    not_modified = await client.get("/Patient/p1", headers={"If-None-Match": 'W/"2"'})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == 'W/"2"'
    assert (await client.get("/Patient/p1", headers={"If-None-Match": 'W/"1"'})).status_code == 200


async def test_if_none_exist(client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "identifier": [{"system": SYS, "value": "mrn-1"}]}
    headers = {"If-None-Exist": f"identifier={SYS}|mrn-1"}
    first = await client.post("/Patient", json=body, headers=headers)
    second = await client.post("/Patient", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


async def test_concurrent_if_match_updates_exactly_one_wins_per_version(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/race", json={**PATIENT, "id": "race"})
    for version in (1, 2, 3):
        responses = await asyncio.gather(*(
            client.put("/Patient/race", json={**PATIENT, "id": "race", "name": [{"family": f"w{version}-{n}"}]},
                       headers={"If-Match": f'W/"{version}"'})
            for n in range(12)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] + [412] * 11, codes
        winner = next(r for r in responses if r.status_code == 200).json()
        current = (await client.get("/Patient/race")).json()
        assert current == winner and current["meta"]["versionId"] == str(version + 1)


async def test_concurrent_blind_updates_never_lose_a_write(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/blind", json={**PATIENT, "id": "blind"})
    responses = await asyncio.gather(*(
        client.put("/Patient/blind", json={**PATIENT, "id": "blind", "name": [{"family": f"w{n}"}]})
        for n in range(15)))
    assert all(r.status_code in (200, 409) for r in responses)
    ok = [r for r in responses if r.status_code == 200]
    versions = sorted(int(r.json()["meta"]["versionId"]) for r in ok)
    assert versions == list(range(2, 2 + len(ok)))  # every success is its own version
    hist = (await client.get("/Patient/blind/_history", params={"_count": "100"})).json()
    stored = {e["resource"]["name"][0]["family"] for e in hist["entry"]}
    assert {r.json()["name"][0]["family"] for r in ok} <= stored


async def test_concurrent_identical_conditional_creates_yield_one_resource(client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "identifier": [{"system": SYS, "value": "same"}]}
    headers = {"If-None-Exist": f"identifier={SYS}|same"}
    responses = await asyncio.gather(*(client.post("/Patient", json=body, headers=headers) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await client.get("/Patient", params={"identifier": f"{SYS}|same"})).json()["total"] == 1


# -- Prefer, _summary, _elements, _pretty, negotiation ----------------------------------------------------

@pytest.mark.parametrize(("prefer", "expect"), [
    ("return=minimal", None), ("return=representation", "Patient"), ("return=OperationOutcome", "OperationOutcome")])
async def test_prefer(client: httpx.AsyncClient, prefer: str, expect: str | None) -> None:
    created = await client.post("/Patient", json=PATIENT, headers={"Prefer": prefer})
    assert created.status_code == 201
    assert created.headers["location"] and created.headers["etag"] == 'W/"1"'
    rid = path_of(created.headers["location"]).split("/")[1]
    updated = await client.put(f"/Patient/{rid}", json={**PATIENT, "id": rid}, headers={"Prefer": prefer})
    for resp in (created, updated):
        if expect is None:
            assert resp.content == b""
        else:
            assert resp.json()["resourceType"] == expect


async def test_summary_and_elements_over_http(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/s", json={**PATIENT, "id": "s", "photo": [{"title": "me"}]})
    summ = (await client.get("/Patient/s", params={"_summary": "true"})).json()
    assert "photo" not in summ and summ["gender"] == "female"
    assert any(t["code"] == "SUBSETTED" for t in summ["meta"]["tag"])
    elems = (await client.get("/Patient/s", params={"_elements": "name"})).json()
    assert set(elems) == {"resourceType", "id", "meta", "name"}
    assert any(t["code"] == "SUBSETTED" for t in elems["meta"]["tag"])
    found = (await client.get("/Patient", params={"_elements": "gender"})).json()
    assert set(found["entry"][0]["resource"]) == {"resourceType", "id", "meta", "gender"}


async def test_pretty(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/p", json={**PATIENT, "id": "p"})
    plain = await client.get("/Patient/p")
    pretty = await client.get("/Patient/p", params={"_pretty": "true"})
    assert b"\n" not in plain.content
    assert pretty.content.startswith(b'{\n  "resourceType"')
    assert pretty.json() == plain.json()
    err = await client.get("/Patient/none", params={"_pretty": "true"})
    assert err.status_code == 404 and b"\n  " in err.content


@pytest.mark.parametrize(("fmt", "accept", "status", "ctype"), [
    (None, None, 200, "application/fhir+json"),
    ("json", None, 200, "application/fhir+json"),
    ("application/json", None, 200, "application/json"),
    ("application/fhir+json", None, 200, "application/fhir+json"),
    (None, "application/json", 200, "application/json"),
    (None, "application/fhir+json", 200, "application/fhir+json"),
    (None, "*/*", 200, "application/fhir+json"),
    (None, "application/fhir+xml;q=0.9, application/fhir+json", 200, "application/fhir+json"),
    ("xml", None, 200, "application/fhir+xml"),
    ("application/fhir+xml", None, 200, "application/fhir+xml"),
    (None, "application/fhir+xml", 200, "application/fhir+xml"),
    (None, "application/xml", 200, "application/xml"),
    ("xml", "application/fhir+json", 200, "application/fhir+xml"),  # _format wins over Accept
    ("ttl", None, 406, None),
    (None, "text/html", 406, None),
])
async def test_format_and_accept(client: httpx.AsyncClient, fmt: str | None, accept: str | None, status: int,
                                 ctype: str | None) -> None:
    await client.put("/Patient/f", json={**PATIENT, "id": "f"})
    resp = await client.get("/Patient/f", params={"_format": fmt} if fmt else None,
                            headers={"Accept": accept} if accept else None)
    assert resp.status_code == status
    if ctype:
        assert resp.headers["content-type"] == f"{ctype}; charset=utf-8"
    else:
        oo(resp)


# -- errors: every status with an OperationOutcome ---------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("POST", "/Patient", {"content": b'{"resourceType": "Patient",'}, 400),
    ("POST", "/Patient", {"content": b"\xff\xfe\x00"}, 400),
    ("POST", "/Patient", {"content": b"[]"}, 400),
    ("POST", "/Patient", {"content": b""}, 400),
    ("PUT", "/Patient/x", {"content": b"null"}, 400),
    ("GET", "/Unicorn/1", {}, 404),
    ("GET", "/Unicorn", {}, 404),
    ("POST", "/Unicorn", {"json": {"resourceType": "Unicorn"}}, 404),
    ("GET", "/Patient/unknown", {}, 404),
    ("GET", "/Patient/unknown/_history/1", {}, 404),
    ("GET", "/not/a/fhir/path/at/all", {}, 404),
    ("PUT", "/Patient/a", {"json": {"resourceType": "Patient", "id": "b"}}, 400),
    ("PUT", "/Patient/a", {"json": {"resourceType": "Observation", "id": "a"}}, 400),
    ("POST", "/Patient", {"content": b"<Patient xmlns='http://hl7.org/fhir'>",
                          "headers": {"content-type": "application/fhir+xml", "accept": "application/json"}}, 400),
    ("POST", "/Patient", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("POST", "/Patient", {"json": [], "headers": {"content-type": "application/json-patch+json"}}, 415),
    ("POST", "/Patient/1", {"json": PATIENT}, 405),
    ("DELETE", "/metadata", {}, 405),
    ("OPTIONS", "/Patient", {}, 405),
    ("POST", "/Patient", {"json": {"resourceType": "Patient", "gender": "robot"}}, 422),
    ("POST", "/Patient", {"json": {"resourceType": "Patient", "birthDate": 1970}}, 400),
])
async def test_error_statuses(client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any],
                              status: int) -> None:
    resp = await client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    oo(resp)
    if status == 405:
        assert resp.headers["allow"]
    assert (await client.get("/_history")).json()["total"] == 0  # nothing was written


async def test_deleted_is_410(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/d", json={**PATIENT, "id": "d"})
    await client.delete("/Patient/d")
    resp = await client.get("/Patient/d")
    assert resp.status_code == 410
    assert oo(resp)["issue"][0]["code"] == "deleted"


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = {**PATIENT, "name": [{"family": "x" * (1024 * 1024 + 10)}]}
    resp = await client.post("/Patient", json=big)
    assert resp.status_code == 413
    oo(resp)

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
        yield b'{"resourceType": "Patient", "name": [{"family": "'
        for _ in range(300):
            yield b"y" * 4096
        yield b'"}]}'

    streamed = await client.post("/Patient", content=chunks())
    assert streamed.status_code == 413
    oo(streamed)
    assert (await client.get("/_history")).json()["total"] == 0


async def test_errors_never_leak_a_stack_trace(raw_client: httpx.AsyncClient) -> None:
    resp = await raw_client.post("/Patient", content=b'{"resourceType": "Patient", "gender": {"a": 1}}')
    assert resp.status_code in (400, 422)
    assert "Traceback" not in resp.text


# -- history paging ------------------------------------------------------------------------------------------

async def test_history_paging_links_followable_to_the_end(client: httpx.AsyncClient) -> None:
    for n in range(23):
        await client.put(f"/Observation/o{n % 5}", json={"resourceType": "Observation", "id": f"o{n % 5}",
                                                           "status": "final", "code": {"text": str(n)}})
    url: str | None = "http://test/fhir/_history?_count=4"
    seen: list[tuple[str, str]] = []
    pages = 0
    total = None
    while url:
        page = (await client.get(url)).json()
        total = page["total"] if total is None else total
        assert page["total"] == total
        seen += [(e["fullUrl"], e["response"]["etag"]) for e in page.get("entry", [])]
        links = {ln["relation"]: ln["url"] for ln in page["link"]}
        assert links["self"].startswith("http://test/fhir/_history?")
        url = links.get("next")
        pages += 1
        if pages == 1:
            await client.post("/Patient", json=PATIENT)  # written mid-paging: pages must not shift
    assert total == 23 and len(seen) == 23 == len(set(seen)) and pages == 6
    dates = []
    for full_url, etag in seen:
        vid = re.fullmatch(r'W/"(\d+)"', etag)
        assert vid
        dates.append((await client.get(f"{full_url}/_history/{vid.group(1)}")).json()["meta"]["lastUpdated"])
    assert dates == sorted(dates, reverse=True)


async def test_history_since_over_http(client: httpx.AsyncClient) -> None:
    first = (await client.post("/Patient", json=PATIENT)).json()
    later = first["meta"]["lastUpdated"]
    await asyncio.sleep(0.01)
    await client.post("/Patient", json=PATIENT)
    assert (await client.get("/Patient/_history", params={"_since": later})).json()["total"] == 2
    future = (await client.get("/Patient/_history", params={"_since": "2999-01-01T00:00:00Z"})).json()
    assert future["total"] == 0 and "entry" not in future


# -- CapabilityStatement --------------------------------------------------------------------------------------

async def test_capability_statement(client: httpx.AsyncClient, app: Any) -> None:
    resp = await client.get("/metadata")
    assert resp.status_code == 200
    cs = resp.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    assert {"application/fhir+json", "application/json"} <= set(cs["format"])
    rest = cs["rest"][0]
    assert rest["mode"] == "server"
    types = {r["type"] for r in rest["resource"]}
    assert len(types) == 146
    assert {"Patient", "ServiceRequest", "Task", "Consent", "Communication", "Binary", "Bundle"} <= types
    router = app.state.router
    expected = {r.interaction for r in router.table.routes if r.level in ("type", "instance")}
    assert expected == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                        "create", "search-type"}
    for r in rest["resource"]:
        assert {i["code"] for i in r["interaction"]} == expected
        assert r["versioning"] == "versioned-update" and r["updateCreate"] is True
    # The statement itself is valid against the core StructureDefinition.
    issues = app.state.services.validator.validate(cs, resource_type="CapabilityStatement")
    assert not [i for i in issues if i.severity in ("error", "fatal")], issues
    assert (await client.head("/metadata")).status_code == 200


# -- regressions found by probing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("PUT", "/Patient/m", {"json": {"resourceType": "Patient", "id": "m", "meta": "x"}}, 400),  # was 500
    ("POST", "/Patient", {"json": {"resourceType": "Patient", "meta": {"profile": "http://x/y"}}}, 400),
    ("POST", "/Patient", {"json": {"resourceType": "Patient", "meta": 7}}, 400),
    ("POST", "/Unicorn/1", {"json": {"resourceType": "Unicorn"}}, 404),  # was 405
    ("DELETE", "/Unicorn/1/_history/1", {}, 404),
])
async def test_probed_errors(client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any],
                             status: int) -> None:
    resp = await client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    oo(resp)


async def test_patch_making_meta_invalid_is_refused(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/m", json={**PATIENT, "id": "m"})
    resp = await client.patch("/Patient/m", content=b'[{"op": "replace", "path": "/meta", "value": 5}]',
                              headers={"content-type": "application/json-patch+json"})
    assert resp.status_code == 400  # was 500
    assert (await client.get("/Patient/m")).json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("path", ["/_history", "/Patient/_history", "/Patient/h/_history", "/Patient"])
async def test_offset_beyond_64_bits_is_an_empty_page(client: httpx.AsyncClient, path: str) -> None:
    await client.put("/Patient/h", json={**PATIENT, "id": "h"})
    resp = await client.get(path, params={"_offset": "9" * 30})  # was 500 (OverflowError in SQLite)
    assert resp.status_code == 200
    assert resp.json()["total"] == 1 and "entry" not in resp.json()


async def test_concurrent_conditional_updates_create_one_resource(client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "identifier": [{"system": SYS, "value": "cu"}]}
    responses = await asyncio.gather(*(client.put("/Patient", params={"identifier": f"{SYS}|cu"},
                                                  json={**body, "name": [{"family": f"n{n}"}]})
                                       for n in range(12)))
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(int(r.json()["meta"]["versionId"]) for r in responses) == list(range(1, 13))


async def test_concurrent_patches_with_if_match_exactly_one_wins(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/pp", json={**PATIENT, "id": "pp"})
    responses = await asyncio.gather(*(
        client.patch("/Patient/pp", content=f'[{{"op":"add","path":"/birthDate","value":"19{n:02d}-01-01"}}]'.encode(),
                     headers={"content-type": "application/json-patch+json", "If-Match": 'W/"1"'})
        for n in range(10)))
    assert sorted(r.status_code for r in responses) == [200] + [412] * 9
    winner = next(r for r in responses if r.status_code == 200).json()
    assert (await client.get("/Patient/pp")).json() == winner


async def test_reads_during_writes_see_consistent_snapshots(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/snap", json={**PATIENT, "id": "snap"})

    async def writer() -> None:
        for n in range(30):
            await client.put("/Patient/snap", json={**PATIENT, "id": "snap", "name": [{"family": f"v{n}"}]})

    async def reader() -> None:
        for _ in range(30):
            hist = (await client.get("/Patient/snap/_history", params={"_count": "1000"})).json()
            etags = [e["response"]["etag"] for e in hist["entry"]]
            assert len(etags) == hist["total"]
            assert etags == [f'W/"{n}"' for n in range(hist["total"], 0, -1)]
            current = await client.get("/Patient/snap")
            assert current.headers["etag"] == f'W/"{current.json()["meta"]["versionId"]}"'

    await asyncio.gather(writer(), reader(), reader())
    assert (await client.get("/Patient/snap")).json()["meta"]["versionId"] == "31"


async def test_methods_and_paths_outside_the_fhir_routes(app: Any) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        trace = await c.request("TRACE", "/fhir/Patient")
        assert trace.status_code == 405  # was 404
        assert "GET" in trace.headers["allow"]
        oo(trace)
        outside = await c.get("/not-fhir/Patient")
        assert outside.status_code == 404
        oo(outside)


async def test_a_store_version_conflict_is_409(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that lost a race the store detected (possible on MongoDB, where writers are not serialised)."""
    from fhir_exchange.store.port import VersionConflict
    from fhir_exchange.store.sqlite import SqliteUnitOfWork

    await client.put("/Patient/vc", json={**PATIENT, "id": "vc"})

    async def lose(self: Any, version: Any, resource: Any, *, expected_version: int) -> None:
        raise VersionConflict(f"{version.type}/{version.id} moved on")

    with monkeypatch.context() as m:
        m.setattr(SqliteUnitOfWork, "put", lose)
        resp = await client.put("/Patient/vc", json={**PATIENT, "id": "vc", "gender": "male"})
    assert resp.status_code == 409
    assert oo(resp)["issue"][0]["code"] == "conflict"
    assert (await client.get("/Patient/vc")).json()["meta"]["versionId"] == "1"
