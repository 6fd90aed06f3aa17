"""transaction over HTTP and at router level: order, urn:uuid rewriting, conditionals, rollback."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from fhir_exchange.bundles.references import rewrite
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest
from fhir_exchange.security.actor import SYSTEM
from tests.bundles.helpers import SYS, bundle, entry, patient, status


async def _count(client: httpx.AsyncClient, type: str, query: str = "") -> int:
    r = await client.get(f"/{type}?{query}&_summary=count" if query else f"/{type}?_summary=count")
    return int(r.json()["total"])


async def test_urn_uuid_references_rewritten_everywhere(client: httpx.AsyncClient) -> None:
    pat = "urn:uuid:11111111-1111-4111-8111-111111111111"
    obs = {
        "resourceType": "Observation", "status": "final", "code": {"text": "bp"},
        "subject": {"reference": pat},
        "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": pat}},
                      {"url": "http://example.org/uri", "valueUri": pat},
                      # dom-3: a contained resource must be referenced from its container.
                      {"url": "http://example.org/provenance", "valueReference": {"reference": "#p1"}}],
        "contained": [{"resourceType": "Provenance", "id": "p1", "recorded": "2024-01-01T00:00:00Z",
                       "target": [{"reference": pat}], "agent": [{"who": {"reference": pat}}]}],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": pat}],  # a string, not a link
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{pat}">patient</a></div>'},
    }
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Observation", obs, "urn:uuid:22222222-2222-4222-8222-222222222222"),
        entry("POST", "Patient", patient("t-1"), pat),
    ))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [status(e) for e in out["entry"]] == [201, 201]
    pid = out["entry"][1]["resource"]["id"]
    stored = (await client.get(out["entry"][0]["response"]["location"])).json()
    ref = f"Patient/{pid}"
    assert stored["subject"]["reference"] == ref
    assert stored["extension"][0]["valueReference"]["reference"] == ref
    assert stored["extension"][1]["valueUri"] == ref
    assert stored["contained"][0]["target"][0]["reference"] == ref
    assert stored["contained"][0]["agent"][0]["who"]["reference"] == ref
    assert stored["identifier"][0]["value"] == pat
    assert f'href="{ref}"' in stored["text"]["div"]


async def test_processing_order_and_get_sees_writes(client: httpx.AsyncClient) -> None:
    old = (await client.post("/Patient", json=patient("t-old"))).json()
    r = await client.post("", json=bundle(
        "transaction",
        entry("GET", f"Patient?identifier={SYS}|t-new"),  # runs last: sees the POST
        entry("PUT", "Patient/t-fixed", patient("t-fixed", id="t-fixed")),
        entry("POST", "Patient", patient("t-new")),
        entry("DELETE", f"Patient/{old['id']}"),
        entry("GET", "Patient/t-fixed"),
    ))
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert [status(e) for e in es] == [200, 201, 201, 200, 200]
    assert es[0]["resource"]["total"] == 1
    assert es[4]["resource"]["id"] == "t-fixed"
    assert (await client.get(f"/Patient/{old['id']}")).status_code == 410


async def test_failure_rolls_back_and_names_the_entry(client: httpx.AsyncClient) -> None:
    before = await _count(client, "Patient")
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Patient", patient("t-rb-1")),
        entry("PUT", "Patient/t-rb-2", patient("t-rb-2", id="t-rb-2")),
        entry("POST", "Patient", {"resourceType": "Patient", "birthDate": "not-a-date"}, "urn:uuid:bad-one"),
    ))
    assert r.status_code in (400, 422), r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    diag = oo["issue"][0]["diagnostics"]
    assert "entry 2" in diag and "urn:uuid:bad-one" in diag
    assert oo["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert await _count(client, "Patient") == before
    assert (await client.get("/Patient/t-rb-2")).status_code == 404


async def test_same_resource_twice_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("", json=bundle(
        "transaction",
        entry("PUT", "Patient/dup", patient("d", id="dup")),
        entry("DELETE", "Patient/dup"),
    ))
    assert r.status_code == 400
    assert "Entries 1 and 0 both act on Patient/dup" in r.json()["issue"][0]["diagnostics"]
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Patient", patient("d2"), ifNoneExist=f"identifier={SYS}|d2"),
        entry("POST", "Patient", patient("d2"), ifNoneExist=f"identifier={SYS}|d2"),
    ))
    assert r.status_code == 400
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Patient", patient("d3"), "urn:uuid:x"),
        entry("POST", "Patient", patient("d4"), "urn:uuid:x"),
    ))
    assert r.status_code == 400 and "bdl-7" in r.text


async def test_conditional_create_update_delete_in_entries(client: httpx.AsyncClient) -> None:
    existing = (await client.post("/Patient", json=patient("c-1"))).json()
    doomed = (await client.post("/Patient", json=patient("c-del"))).json()
    tx = bundle(
        "transaction",
        entry("POST", "Patient", patient("c-1"), "urn:uuid:c1", ifNoneExist=f"identifier={SYS}|c-1"),
        entry("PUT", f"Patient?identifier={SYS}|c-2", patient("c-2", gender="female"), "urn:uuid:c2"),
        entry("DELETE", f"Patient?identifier={SYS}|c-del"),
        entry("POST", "Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                      "subject": {"reference": "urn:uuid:c1"},
                                      "performer": [{"reference": "urn:uuid:c2"}]}),
    )
    r = await client.post("", json=tx)
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert [status(e) for e in es] == [200, 201, 200, 201]
    assert es[0]["response"]["location"].split("/")[-3] == existing["id"]
    c2 = es[1]["response"]["location"].split("/")[-3]
    obs = es[3]["resource"]
    assert obs["subject"]["reference"] == f"Patient/{existing['id']}"
    assert obs["performer"][0]["reference"] == f"Patient/{c2}"
    assert (await client.get(f"/Patient/{doomed['id']}")).status_code == 410
    # ifMatch on an entry: stale version → 412, nothing written
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Patient", patient("c-3")),
        entry("PUT", f"Patient/{existing['id']}", patient("c-1", id=existing["id"]), ifMatch='W/"7"'),
    ))
    assert r.status_code == 412
    assert await _count(client, "Patient", f"identifier={SYS}|c-3") == 0


async def test_conditional_references(client: httpx.AsyncClient) -> None:
    p = (await client.post("/Patient", json=patient("cr-1"))).json()
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient?identifier={SYS}|cr-1"}}
    r = await client.post("", json=bundle("transaction", entry("POST", "Observation", obs)))
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{p['id']}"
    # no match
    obs["subject"]["reference"] = f"Patient?identifier={SYS}|nobody"
    r = await client.post("", json=bundle("transaction", entry("POST", "Observation", obs)))
    assert r.status_code == 400 and "matches no Patient" in r.text
    # several matches
    await client.post("/Patient", json=patient("cr-1"))
    obs["subject"]["reference"] = f"Patient?identifier={SYS}|cr-1"
    r = await client.post("", json=bundle("transaction", entry("POST", "Observation", obs)))
    assert r.status_code == 412
    # resolves to a conditional create of the same Bundle
    obs["subject"]["reference"] = f"Patient?identifier={SYS}|cr-new"
    r = await client.post("", json=bundle(
        "transaction",
        entry("POST", "Observation", obs),
        entry("POST", "Patient", patient("cr-new"), ifNoneExist=f"identifier={SYS}|cr-new"),
    ))
    assert r.status_code == 200, r.text
    es = r.json()["entry"]
    assert es[0]["resource"]["subject"]["reference"] == f"Patient/{es[1]['resource']['id']}"


async def test_patch_entry_as_binary(client: httpx.AsyncClient) -> None:
    import base64

    import orjson

    p = (await client.post("/Patient", json=patient("pa-1"))).json()
    ops = [{"op": "add", "path": "/gender", "value": "male"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(orjson.dumps(ops)).decode()}
    r = await client.post("", json=bundle("transaction", entry("PATCH", f"Patient/{p['id']}", binary)))
    assert r.status_code == 200, r.text
    assert (await client.get(f"/Patient/{p['id']}")).json()["gender"] == "male"


async def test_large_transaction_without_cap(client: httpx.AsyncClient) -> None:
    n = 2000
    entries = []
    for i in range(n // 2):
        entries.append(entry("POST", "Patient", patient(f"big-{i}"), f"urn:uuid:p-{i}"))
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": f"urn:uuid:p-{i}"}}
        entries.append(entry("POST", "Observation", obs))
    r = await client.post("", json=bundle("transaction", *entries), headers={"Prefer": "return=minimal"})
    assert r.status_code == 200
    assert len(r.json()["entry"]) == n
    assert await _count(client, "Observation") == n // 2


async def test_get_entry_reads_inside_the_unit_of_work(app: Starlette) -> None:
    router = app.state.router
    svc = app.state.services
    async with Repository(svc, SYSTEM).unit() as w:
        created = await router.dispatch(FhirRequest("POST", "Patient", body=patient("uow-1")), w.in_unit)
        pid = created.json()["id"]  # type: ignore[index]
        inside = await router.dispatch(FhirRequest("GET", f"Patient/{pid}"), w.in_unit)
        assert inside.status == 200
        assert await svc.store.read("Patient", pid) is None  # not committed yet
    assert (await svc.store.read("Patient", pid)) is not None


def test_rewrite_only_exact_links() -> None:
    doc = {"a": {"reference": "urn:uuid:1"}, "b": [{"reference": "urn:uuid:10"}], "valueCanonical": "urn:uuid:1",
           "note": "urn:uuid:1"}
    assert rewrite(doc, {"urn:uuid:1": "Patient/9"}) == 1
    assert doc == {"a": {"reference": "Patient/9"}, "b": [{"reference": "urn:uuid:10"}],
                   "valueCanonical": "urn:uuid:1", "note": "urn:uuid:1"}
