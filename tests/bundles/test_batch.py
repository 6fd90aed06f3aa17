"""batch over HTTP: independent entries through the router, per-entry outcomes."""

from __future__ import annotations

import httpx

from tests.bundles.helpers import SYS, bundle, entry, patient, status


async def test_batch_entries_are_independent(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient("b-0"))).json()
    r = await client.post("", json=bundle(
        "batch",
        entry("POST", "Patient", patient("b-1")),
        entry("GET", f"Patient/{created['id']}"),
        entry("GET", "Patient/does-not-exist"),
        entry("PUT", f"Patient/{created['id']}", patient("b-0", id="other-id")),  # id mismatch: 400
        entry("DELETE", f"Patient/{created['id']}", ifMatch='W/"1"'),
        entry("GET", f"Patient?identifier={SYS}|b-1"),
    ))
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    es = out["entry"]
    assert [status(e) for e in es] == [201, 200, 404, 400, 200, 200]
    assert es[0]["response"]["location"].startswith("http://test/fhir/Patient/")
    assert es[0]["response"]["etag"] == 'W/"1"'
    assert "lastModified" in es[0]["response"]
    assert es[0]["resource"]["identifier"][0]["value"] == "b-1"
    assert es[1]["resource"]["id"] == created["id"]
    assert es[2]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert es[3]["response"]["outcome"]["issue"][0]["severity"] == "error"
    assert es[5]["resource"]["total"] == 1
    # the failed entries did not stop the others: the delete happened
    assert (await client.get(f"/Patient/{created['id']}")).status_code == 410


async def test_batch_with_malformed_entry_and_nested_bundle(client: httpx.AsyncClient) -> None:
    r = await client.post("", json=bundle(
        "batch",
        {"resource": patient("x")},  # no request (bdl-3)
        entry("POST", "", bundle("batch")),
        entry("POST", "Patient", patient("b-2")),
    ))
    assert r.status_code == 200
    assert [status(e) for e in r.json()["entry"]] == [400, 400, 201]


async def test_batch_prefer_minimal_and_conditional_create(client: httpx.AsyncClient) -> None:
    b = bundle("batch", entry("POST", "Patient", patient("b-3"), ifNoneExist=f"identifier={SYS}|b-3"))
    r1 = await client.post("", json=b, headers={"Prefer": "return=minimal"})
    r2 = await client.post("", json=b)
    e1, e2 = r1.json()["entry"][0], r2.json()["entry"][0]
    assert status(e1) == 201 and "resource" not in e1
    assert status(e2) == 200 and e2["response"]["location"] == e1["response"]["location"]


async def test_post_base_needs_a_batch_or_transaction(client: httpx.AsyncClient) -> None:
    r = await client.post("", json=bundle("collection"))
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.post("", json=patient("x"))
    assert r.status_code == 400
