"""HTTP PATCH with a FHIRPath Patch body (https://hl7.org/fhir/R4/fhirpatch.html, a Parameters resource as
application/fhir+json) beside JSON Patch, and what the CapabilityStatement says about both."""

from __future__ import annotations

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PATCH = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "operation", "part": [{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
                                       {"name": "name", "valueString": "birthDate"},
                                       {"name": "value", "valueDate": "1930-01-01"}]},
        {"name": "operation", "part": [{"name": "type", "valueCode": "insert"},
                                       {"name": "path", "valueString": "Patient.name"},
                                       {"name": "index", "valueInteger": 0},
                                       {"name": "value", "part": [{"name": "family", "valueString": "Lee"},
                                                                  {"name": "given", "valueString": "Seo"}]}]},
    ],
}





async def test_patch_with_parameters_then_read(client: httpx.AsyncClient) -> None:
    r = await client.put("/Patient/h1", json={"resourceType": "Patient", "id": "h1", "name": [{"family": "Kim"}]},
                         headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    r = await client.patch("/Patient/h1", json=PATCH, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'
    got = (await client.get("/Patient/h1")).json()
    assert got["birthDate"] == "1930-01-01"
    assert got["name"] == [{"family": "Lee", "given": ["Seo"]}, {"family": "Kim"}]
    # JSON Patch keeps working beside it.
    r = await client.patch("/Patient/h1", json=[{"op": "add", "path": "/active", "value": True}],
                           headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["active"] is True


async def test_a_bad_fhirpath_patch_is_a_422_operation_outcome(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/h2", json={"resourceType": "Patient", "id": "h2"}, headers=FHIR_JSON)
    body = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "move"}, {"name": "path", "valueString": "Patient.identifier"},
        {"name": "source", "valueInteger": 0}, {"name": "destination", "valueInteger": 1}]}]}
    r = await client.patch("/Patient/h2", json=body, headers=FHIR_JSON)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "processing" and issue["expression"] == ["Parameters.parameter[0]"]
    assert "(move, path 'Patient.identifier')" in issue["diagnostics"]


async def test_a_patch_body_of_neither_format_is_400(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/h3", json={"resourceType": "Patient", "id": "h3"}, headers=FHIR_JSON)
    r = await client.patch("/Patient/h3", json={"resourceType": "Patient", "id": "h3"}, headers=FHIR_JSON)
    assert r.status_code == 400 and "FHIRPath Patch" in r.json()["issue"][0]["diagnostics"]


async def test_capability_statement_declares_both_patch_formats_and_list(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/metadata")).json()
    assert set(cs["patchFormat"]) == {"application/json-patch+json", "application/fhir+json", "application/fhir+xml"}
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    patch = next(i for i in patient["interaction"] if i["code"] == "patch")
    assert "FHIRPath Patch" in patch["documentation"] and "JSON Patch" in patch["documentation"]
    assert any(p["name"] == "_list" for p in patient["searchParam"])
    assert any(p["name"] == "_list" for p in cs["rest"][0]["searchParam"])
