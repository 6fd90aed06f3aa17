"""history, conditional create/update/delete, routing errors and the CapabilityStatement, without HTTP."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_exchange.interactions.router import Router
from tests.interactions.conftest import Call, doc

SYS = "urn:oid:1.2.410.100"


def patient(id: str | None = None, mrn: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient", **extra}
    if id:
        out["id"] = id
    if mrn:
        out["identifier"] = [{"system": SYS, "value": mrn}]
    return out


async def _scenario(call: Call) -> None:
    # t1 Patient/a v1, t2 Patient/b v1, t3 Observation/o v1, t4 Patient/a v2, t5 delete b
    await call("PUT", "Patient/a", patient("a"))
    await call("PUT", "Patient/b", patient("b"))
    await call("PUT", "Observation/o", {"resourceType": "Observation", "id": "o", "status": "final",
                                        "code": {"text": "x"}})
    await call("PUT", "Patient/a", patient("a", gender="male"))
    await call("DELETE", "Patient/b")


def keys(bundle: dict[str, Any]) -> list[str]:
    return [e["response"]["etag"] + " " + e["fullUrl"].rsplit("/", 2)[-2] + "/" + e["fullUrl"].rsplit("/", 1)[-1]
            for e in bundle.get("entry", [])]


async def test_history_levels(call: Call) -> None:
    await _scenario(call)
    inst = doc(await call("GET", "Patient/a/_history"))
    assert inst["type"] == "history" and inst["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in inst["entry"]] == ["PUT", "PUT"]
    assert [e["response"]["status"] for e in inst["entry"]] == ["200 OK", "201 Created"]
    typ = doc(await call("GET", "Patient/_history"))
    assert typ["total"] == 4
    assert keys(typ) == ['W/"2" Patient/b', 'W/"2" Patient/a', 'W/"1" Patient/b', 'W/"1" Patient/a']
    deleted = typ["entry"][0]
    assert "resource" not in deleted and deleted["request"] == {"method": "DELETE", "url": "Patient/b"}
    system = doc(await call("GET", "_history"))
    assert system["total"] == 5
    assert [e["response"]["lastModified"] for e in system["entry"]] == [
        f"2024-01-01T00:00:0{n}.000Z" for n in (5, 4, 3, 2, 1)]


async def test_history_of_a_deleted_resource_still_works(call: Call) -> None:
    await _scenario(call)
    hist = doc(await call("GET", "Patient/b/_history"))
    assert hist["total"] == 2


async def test_history_since_and_at(call: Call) -> None:
    await _scenario(call)
    since = doc(await call("GET", "_history", query=[("_since", "2024-01-01T00:00:03Z")]))
    assert since["total"] == 3
    at = doc(await call("GET", "Patient/_history", query=[("_at", "2024-01-01T00:00:04.5Z")]))
    assert sorted(keys(at)) == ['W/"1" Patient/b', 'W/"2" Patient/a']
    assert doc(await call("GET", "_history", query=[("_since", "2024-02-01")]))["total"] == 0


@pytest.mark.parametrize(("name", "value"), [("_since", "yesterday"), ("_at", "2024-01-01T10:00:00"),
                                             ("_count", "-1"), ("_count", "many"), ("_offset", "x")])
async def test_history_bad_parameters_are_400(call: Call, name: str, value: str) -> None:
    assert (await call.error("GET", "_history", query=[(name, value)])).status == 400


async def test_history_of_unknown_resource_or_type(call: Call) -> None:
    assert (await call.error("GET", "Patient/zz/_history")).status == 404
    assert (await call.error("GET", "Unicorn/_history")).status == 404


async def test_history_paging_links_reach_every_version_once(call: Call) -> None:
    for n in range(7):
        await call("PUT", f"Patient/p{n % 3}", patient(f"p{n % 3}", gender=["male", "female"][n % 2]))
    first = doc(await call("GET", "Patient/_history", query=[("_count", "3")]))
    seen: list[str] = []
    page: dict[str, Any] | None = first
    pages = 0
    # A write after the first page must not shift the pages (they are pinned by _till).
    await call("PUT", "Patient/late", patient("late"))
    while page is not None:
        pages += 1
        seen += [e["fullUrl"] + "@" + e["response"]["etag"] for e in page.get("entry", [])]
        nxt = [ln["url"] for ln in page["link"] if ln["relation"] == "next"]
        if not nxt:
            break
        url = urlsplit(nxt[0])
        path = url.path.removeprefix("/fhir/")
        page = doc(await call("GET", path, query=parse_qsl(url.query)))
    assert pages == 3
    assert len(seen) == 7 == len(set(seen)) == first["total"]
    assert not any("late" in s for s in seen)
    rels = {ln["relation"] for ln in first["link"]}
    assert {"self", "first", "next", "last"} <= rels


# -- conditional -------------------------------------------------------------------------------------

async def test_conditional_create(call: Call) -> None:
    headers = {"If-None-Exist": f"identifier={SYS}|123"}
    first = await call("POST", "Patient", patient(mrn="123"), headers=headers)
    assert first.status == 201
    again = await call("POST", "Patient", patient(mrn="123", gender="male"), headers=headers)
    assert again.status == 200
    assert doc(again)["id"] == doc(first)["id"] and "gender" not in doc(again)
    assert again.location == first.location
    await call("POST", "Patient", patient(mrn="123"))  # unconditional: a second one
    assert (await call.error("POST", "Patient", patient(mrn="123"), headers=headers)).status == 412
    # "Patient?identifier=..." as some clients send it
    other = await call("POST", "Patient", patient(mrn="9"), headers={"If-None-Exist": f"Patient?identifier={SYS}|9"})
    assert other.status == 201


async def test_conditional_create_with_unknown_parameter_is_refused(call: Call) -> None:
    err = await call.error("POST", "Patient", patient(), headers={"If-None-Exist": "shoe-size=42"})
    assert err.status == 400
    assert doc(await call("GET", "_history"))["total"] == 0


async def test_concurrent_identical_conditional_creates_make_one_resource(call: Call) -> None:
    headers = {"If-None-Exist": f"identifier={SYS}|race"}
    results = await asyncio.gather(*(call("POST", "Patient", patient(mrn="race"), headers=headers)
                                     for _ in range(15)))
    assert sorted(r.status for r in results) == [200] * 14 + [201]
    assert len({doc(r)["id"] for r in results}) == 1
    assert doc(await call("GET", "Patient/_history"))["total"] == 1


async def test_conditional_update(call: Call) -> None:
    created = await call("PUT", "Patient", patient(mrn="7"), query=[("identifier", f"{SYS}|7")])
    assert created.status == 201
    pid = doc(created)["id"]
    updated = await call("PUT", "Patient", patient(mrn="7", gender="male"), query=[("identifier", f"{SYS}|7")])
    assert updated.status == 200 and doc(updated)["id"] == pid and doc(updated)["meta"]["versionId"] == "2"
    wrong = await call.error("PUT", "Patient", patient("other", mrn="7"), query=[("identifier", f"{SYS}|7")])
    assert wrong.status == 400
    await call("POST", "Patient", patient(mrn="7"))
    assert (await call.error("PUT", "Patient", patient(mrn="7"), query=[("identifier", f"{SYS}|7")])).status == 412
    assert (await call.error("PUT", "Patient", patient(mrn="7"))).status == 400  # no criteria


async def test_conditional_delete(call: Call) -> None:
    await call("PUT", "Patient/a", patient("a", mrn="1"))
    await call("PUT", "Patient/b", patient("b", mrn="2"))
    await call("PUT", "Patient/c", patient("c", mrn="2"))
    assert (await call.error("DELETE", "Patient", query=[("identifier", f"{SYS}|2")])).status == 412
    none = await call("DELETE", "Patient", query=[("identifier", f"{SYS}|404")])
    assert none.status == 200
    assert (await call("DELETE", "Patient", query=[("identifier", f"{SYS}|1")])).status == 200
    assert (await call.error("GET", "Patient/a")).status == 410
    assert (await call("GET", "Patient/b")).status == 200


async def test_conditional_patch(call: Call) -> None:
    await call("PUT", "Patient/a", patient("a", mrn="1"))
    ops = [{"op": "add", "path": "/active", "value": False}]
    resp = await call("PATCH", "Patient", ops, query=[("identifier", f"{SYS}|1")])
    assert doc(resp)["active"] is False
    assert (await call.error("PATCH", "Patient", ops, query=[("identifier", f"{SYS}|0")])).status == 404


# -- routing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("DELETE", "metadata", 405, "GET"),
    ("POST", "Patient/1", 405, "DELETE, GET, PATCH, PUT"),
    ("PUT", "Patient/1/_history", 405, "GET"),
    ("DELETE", "Patient/1/_history/1", 405, "GET"),
    ("GET", "Unicorn", 404, None),
    ("GET", "Patient/1/2/3/4/5", 404, None),
    ("GET", "Patient/$nope", 404, None),
])
async def test_routing_errors(call: Call, method: str, path: str, status: int,
                              allow: str | None) -> None:
    err = await call.error(method, path, {"resourceType": "Bundle", "type": "batch"})
    assert err.status == status
    if allow:
        assert err.headers["Allow"] == allow


async def test_head_is_a_get(call: Call) -> None:
    await call("PUT", "Patient/a", patient("a"))
    assert (await call("HEAD", "Patient/a")).status == 200


# -- capabilities --------------------------------------------------------------------------------------

async def test_capability_statement_is_generated_from_the_route_table(call: Call, router: Router) -> None:
    cs = doc(await call("GET", "metadata"))
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    rest = cs["rest"][0]
    types = [r["type"] for r in rest["resource"]]
    assert len(types) == 146 == len(set(types))
    assert set(types) == set(router.services.definitions.resource_types())
    route_codes = {r.interaction for r in router.table.routes if r.level in ("type", "instance")}
    for entry in rest["resource"]:
        assert {i["code"] for i in entry["interaction"]} == route_codes
    assert {"history-system", "search-system"} <= {i["code"] for i in rest["interaction"]}
    # A route added to the table shows up: nothing is hand-written.
    router.table.routes = [r for r in router.table.routes if r.interaction != "patch"]
    cs2 = doc(await call("GET", "metadata"))
    assert "patch" not in {i["code"] for i in cs2["rest"][0]["resource"][0]["interaction"]}


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "PUT"])
@pytest.mark.parametrize("query", [[], [("_format", "json")], [("_pretty", "true"), ("_count", "5")]])
async def test_conditional_writes_without_criteria_touch_nothing(call: Call, method: str,
                                                                 query: list[tuple[str, str]]) -> None:
    # Before the fix, "DELETE [base]/Patient" deleted the only Patient (and PATCH patched it).
    await call("PUT", "Patient/only", patient("only"))
    body: Any = [] if method == "PATCH" else patient()
    err = await call.error(method, "Patient", body, query=query)
    assert err.status == 400
    assert doc(await call("GET", "Patient/only"))["meta"]["versionId"] == "1"


async def test_result_parameters_do_not_narrow_a_condition(call: Call) -> None:
    await call("PUT", "Patient/a", patient("a", mrn="1"))
    # _offset=1 would skip the only match and delete nothing (or, with two matches, pick one).
    resp = await call("DELETE", "Patient", query=[("identifier", f"{SYS}|1"), ("_offset", "1")])
    assert resp.status == 200
    assert (await call.error("GET", "Patient/a")).status == 410


async def test_history_since_with_an_unencoded_plus(call: Call) -> None:
    await _scenario(call)
    # "+09:00" sent unencoded in a URL arrives as " 09:00"
    err = await call.error("GET", "_history", query=[("_since", "2024-01-01T09:00:03 09:00")])
    assert err.status == 400 and "%2B" in err.diagnostics  # refused as HAPI FHIR does, but with the reason
    encoded = doc(await call("GET", "_history", query=[("_since", "2024-01-01T09:00:03+09:00")]))
    assert encoded["total"] == 3
