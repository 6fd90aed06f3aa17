"""create, read, vread, update, delete and patch through the router, without HTTP."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_exchange.errors import Category
from tests.interactions.conftest import BASE, Call, FakeClock, doc

PATIENT: dict[str, Any] = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01",
                           "name": [{"family": "Kim", "given": ["Minji"]}]}


async def test_create_assigns_id_version_and_lastupdated(call: Call, fake_clock: FakeClock) -> None:
    resp = await call("POST", "Patient", {**PATIENT, "id": "client-choice"})
    assert resp.status == 201
    out = doc(resp)
    assert out["id"] == "id-1"  # the server's id; a client id in the body is ignored
    assert out["meta"] == {"versionId": "1", "lastUpdated": "2024-01-01T00:00:01.000Z"}
    assert resp.etag == 'W/"1"'
    assert resp.last_modified == "2024-01-01T00:00:01.000Z"
    assert resp.location == f"{BASE}/Patient/id-1/_history/1"
    assert {k: v for k, v in out.items() if k not in ("id", "meta")} == PATIENT


async def test_create_keeps_client_meta_but_owns_version_and_time(call: Call) -> None:
    meta = {"versionId": "99", "lastUpdated": "1999-01-01T00:00:00Z", "tag": [{"system": "urn:t", "code": "x"}]}
    out = doc(await call("POST", "Patient", {**PATIENT, "meta": meta}))
    assert out["meta"]["versionId"] == "1"
    assert out["meta"]["lastUpdated"] == "2024-01-01T00:00:01.000Z"
    assert out["meta"]["tag"] == meta["tag"]


async def test_read_returns_the_stored_bytes(call: Call) -> None:
    created = await call("POST", "Patient", PATIENT)
    read = await call("GET", "Patient/id-1")
    assert read.status == 200
    assert read.body == created.body
    assert read.etag == 'W/"1"'


@pytest.mark.parametrize(("path", "category"), [
    ("Patient/unknown", Category.NOT_FOUND),
    ("Unicorn/1", Category.NOT_FOUND),
    ("Patient/bad_id!", Category.INVALID),
    ("Patient/" + "a" * 65, Category.INVALID),
])
async def test_read_errors(call: Call, path: str, category: Category) -> None:
    err = await call.error("GET", path)
    assert err.category is category
    assert err.outcome()["resourceType"] == "OperationOutcome"


async def test_update_increments_version(call: Call) -> None:
    await call("POST", "Patient", PATIENT)
    resp = await call("PUT", "Patient/id-1", {**PATIENT, "id": "id-1", "gender": "male"})
    assert resp.status == 200
    assert resp.location is None
    out = doc(resp)
    assert out["meta"]["versionId"] == "2" and out["gender"] == "male"
    assert resp.etag == 'W/"2"'
    v1 = doc(await call("GET", "Patient/id-1/_history/1"))
    assert v1["gender"] == "female" and v1["meta"]["versionId"] == "1"


async def test_update_as_create_with_client_id(call: Call) -> None:
    resp = await call("PUT", "Organization/hosp-1", {"resourceType": "Organization", "id": "hosp-1", "name": "H"})
    assert resp.status == 201
    assert resp.location == f"{BASE}/Organization/hosp-1/_history/1"
    assert doc(await call("GET", "Organization/hosp-1"))["name"] == "H"


@pytest.mark.parametrize("body_id", [None, "other"])
async def test_update_needs_the_url_id_in_the_body(call: Call, body_id: str | None) -> None:
    body = {**PATIENT} if body_id is None else {**PATIENT, "id": body_id}
    err = await call.error("PUT", "Patient/p1", body)
    assert err.status == 400
    assert err.issues[0].expression == ("id",)
    assert await call.error("GET", "Patient/p1")  # nothing written


async def test_update_with_wrong_resource_type_is_400(call: Call) -> None:
    err = await call.error("PUT", "Patient/p1", {"resourceType": "Observation", "id": "p1"})
    assert err.status == 400


async def test_if_match(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    err = await call.error("PUT", "Patient/p1", {**PATIENT, "id": "p1"}, headers={"If-Match": 'W/"7"'})
    assert err.status == 412
    ok = await call("PUT", "Patient/p1", {**PATIENT, "id": "p1", "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert ok.status == 200 and ok.etag == 'W/"2"'
    malformed = await call.error("PUT", "Patient/p1", {**PATIENT, "id": "p1"}, headers={"If-Match": "yesterday"})
    assert malformed.status == 400
    missing = await call.error("PUT", "Patient/p9", {**PATIENT, "id": "p9"}, headers={"If-Match": 'W/"1"'})
    assert missing.status == 412


async def test_clock_stepping_back_never_reorders_versions(call: Call, fake_clock: FakeClock) -> None:
    from datetime import timedelta

    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    fake_clock.at -= timedelta(hours=1)
    out = doc(await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"}))
    assert out["meta"]["lastUpdated"] >= "2024-01-01T00:00:01.000Z"


async def test_delete_then_read_is_gone_and_vread_still_works(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    resp = await call("DELETE", "Patient/p1")
    assert resp.status == 200
    assert doc(resp)["resourceType"] == "OperationOutcome"
    assert resp.etag == 'W/"2"'
    assert (await call.error("GET", "Patient/p1")).status == 410
    assert doc(await call("GET", "Patient/p1/_history/1"))["gender"] == "female"
    assert (await call.error("GET", "Patient/p1/_history/2")).status == 410
    assert (await call.error("GET", "Patient/p1/_history/3")).status == 404


async def test_delete_twice_changes_nothing(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    await call("DELETE", "Patient/p1")
    again = await call("DELETE", "Patient/p1")
    assert again.status == 200
    hist = doc(await call("GET", "Patient/p1/_history"))
    assert hist["total"] == 2


async def test_delete_of_unknown_resource_is_200_and_writes_nothing(call: Call) -> None:
    # http.html#delete: "or if the resource does not exist at all ... 200 OK"
    resp = await call("DELETE", "Patient/never")
    assert resp.status == 200
    assert doc(resp)["issue"][0]["severity"] == "information"
    assert (await call.error("GET", "Patient/never")).status == 404
    assert doc(await call("GET", "_history"))["total"] == 0


async def test_delete_with_if_match(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    assert (await call.error("DELETE", "Patient/p1", headers={"If-Match": 'W/"5"'})).status == 412
    assert (await call("DELETE", "Patient/p1", headers={"If-Match": 'W/"1"'})).status == 200


async def test_recreate_after_delete_continues_the_version_sequence(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    await call("DELETE", "Patient/p1")
    resp = await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    assert resp.status == 201
    assert doc(resp)["meta"]["versionId"] == "3"


async def test_vread_of_bad_version_ids(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    for vid in ("0", "abc", "-1", "9" * 30):
        assert (await call.error("GET", f"Patient/p1/_history/{vid}")).status == 404
    assert (await call.error("GET", "Patient/nope/_history/1")).status == 404


# -- patch -----------------------------------------------------------------------------------------

async def test_json_patch(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    ops = [{"op": "replace", "path": "/gender", "value": "male"}, {"op": "add", "path": "/active", "value": True}]
    resp = await call("PATCH", "Patient/p1", ops)
    assert resp.status == 200
    out = doc(resp)
    assert out["gender"] == "male" and out["active"] is True and out["meta"]["versionId"] == "2"
    hist = doc(await call("GET", "Patient/p1/_history"))
    assert hist["entry"][0]["request"]["method"] == "PATCH"


@pytest.mark.parametrize(("ops", "status"), [
    ([{"op": "test", "path": "/gender", "value": "male"}], 422),
    ([{"op": "replace", "path": "/id", "value": "other"}], 422),
    ([{"op": "remove", "path": "/nothing"}], 422),
    ({"op": "replace"}, 400),
    ([{"op": "replace", "path": "/gender", "value": "robot"}], 422),  # required binding
    ([{"op": "add", "path": "/unknownElement", "value": 1}], 400),
])
async def test_bad_patches_change_nothing(call: Call, ops: Any, status: int) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    assert (await call.error("PATCH", "Patient/p1", ops)).status == status
    assert doc(await call("GET", "Patient/p1"))["meta"]["versionId"] == "1"


async def test_patch_with_if_match_and_of_missing_or_deleted(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    assert (await call.error("PATCH", "Patient/p1", ops, headers={"If-Match": 'W/"3"'})).status == 412
    assert (await call.error("PATCH", "Patient/p2", ops)).status == 404
    await call("DELETE", "Patient/p1")
    assert (await call.error("PATCH", "Patient/p1", ops)).status == 410


# -- validation on write ---------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status"), [
    ({"resourceType": "Patient", "gender": "robot"}, 422),
    ({"resourceType": "Patient", "birthDate": "not-a-date"}, 400),
    ({"resourceType": "Patient", "colour": "blue"}, 400),
    ({"resourceType": "Patient", "active": "yes"}, 400),
    ({"resourceType": "Observation", "status": "final"}, 400),  # code 1..1 missing
])
async def test_invalid_resources_are_refused_with_expressions(call: Call, body: dict[str, Any], status: int) -> None:
    err = await call.error("POST", body["resourceType"], body)
    assert err.status == status
    assert any(i.expression for i in err.issues)
    assert doc(await call("GET", "_history"))["total"] == 0


async def test_create_needs_a_resource_body(call: Call) -> None:
    for body in (None, [], "x", {"gender": "male"}):
        assert (await call.error("POST", "Patient", body)).status == 400
    assert (await call.error("POST", "Patient", {"resourceType": "Observation"})).status == 400


# -- Prefer ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("prefer", "kind"), [
    ("return=minimal", None),
    ("return=representation", "Patient"),
    ("return=OperationOutcome", "OperationOutcome"),
    (None, "Patient"),
])
async def test_prefer_return(call: Call, prefer: str | None, kind: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    for resp in (await call("POST", "Patient", PATIENT, headers=headers),
                 await call("PUT", "Patient/id-1", {**PATIENT, "id": "id-1"}, headers=headers),
                 await call("PATCH", "Patient/id-1", [{"op": "add", "path": "/active", "value": True}],
                            headers=headers)):
        assert resp.etag
        out = resp.json()
        assert (out or {}).get("resourceType") == kind


# -- conditional read ------------------------------------------------------------------------------

async def test_if_none_match_and_if_modified_since(call: Call) -> None:
    await call("PUT", "Patient/p1", {**PATIENT, "id": "p1"})  # lastUpdated 00:00:01
    assert (await call("GET", "Patient/p1", headers={"If-None-Match": 'W/"1"'})).status == 304
    assert (await call("GET", "Patient/p1", headers={"If-None-Match": 'W/"2"'})).status == 200
    ims = {"If-Modified-Since": "Mon, 01 Jan 2024 00:00:05 GMT"}
    assert (await call("GET", "Patient/p1", headers=ims)).status == 304
    old = {"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"}
    assert (await call("GET", "Patient/p1", headers=old)).status == 200
    assert (await call("GET", "Patient/p1", headers={"If-Modified-Since": "garbage"})).status == 200


# -- _summary / _elements ----------------------------------------------------------------------------

async def test_summary_and_elements_tag_subsetted(call: Call) -> None:
    body = {**PATIENT, "id": "p1", "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">K</div>'},
            "photo": [{"contentType": "image/png", "data": "AAAA"}]}
    await call("PUT", "Patient/p1", body)
    summary = doc(await call("GET", "Patient/p1", query=[("_summary", "true")]))
    assert "photo" not in summary and "text" not in summary
    assert summary["gender"] == "female" and summary["name"]
    assert {"code": "SUBSETTED"}.items() <= summary["meta"]["tag"][0].items()
    elements = doc(await call("GET", "Patient/p1", query=[("_elements", "gender")]))
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert elements["meta"]["tag"][0]["code"] == "SUBSETTED"
    data = doc(await call("GET", "Patient/p1", query=[("_summary", "data")]))
    assert "text" not in data and "photo" in data
    text = doc(await call("GET", "Patient/p1", query=[("_summary", "text")]))
    assert "text" in text and "photo" not in text
    full = doc(await call("GET", "Patient/p1", query=[("_summary", "false")]))
    assert "tag" not in full["meta"]
    vread = doc(await call("GET", "Patient/p1/_history/1", query=[("_elements", "birthDate")]))
    assert set(vread) == {"resourceType", "id", "meta", "birthDate"}
    assert (await call.error("GET", "Patient/p1", query=[("_summary", "maybe")])).status == 400
    stored = await call("GET", "Patient/p1")
    assert "tag" not in orjson.loads(stored.body or b"{}")["meta"]  # subsetting never touched storage


async def test_update_that_changes_nothing_keeps_the_version(call: Call) -> None:
    first = await call("PUT", "Patient/same", {**PATIENT, "id": "same", "meta": {"tag": [{"code": "t"}]}})
    # Same content in another key order, with a stale versionId/lastUpdated: nothing to write.
    again = await call("PUT", "Patient/same", {"meta": {"versionId": "9", "lastUpdated": "2020-01-01T00:00:00Z",
                                                        "tag": [{"code": "t"}]}, "id": "same", **PATIENT})
    assert again.status == 200 and again.etag == 'W/"1"' and again.body == first.body
    history = doc(await call("GET", "Patient/same/_history"))
    assert history["total"] == 1
    # A change of meta.tag, or of a decimal's precision, is a change.
    changed = await call("PUT", "Patient/same", {**PATIENT, "id": "same", "meta": {"tag": [{"code": "u"}]}})
    assert changed.etag == 'W/"2"'
