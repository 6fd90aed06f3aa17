"""Document Bundles stored with POST /Bundle: bdl-9, bdl-10, bdl-11."""

from __future__ import annotations

from typing import Any

import httpx


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "Bundle", "type": "document", "timestamp": "2024-05-01T10:00:00Z",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
        "entry": [
            {"fullUrl": "urn:uuid:c1", "resource": {
                "resourceType": "Composition", "status": "final", "type": {"coding": [
                    {"system": "http://loinc.org", "code": "11488-4"}]}, "date": "2024-05-01T10:00:00Z",
                "author": [{"reference": "urn:uuid:o1"}], "title": "Consult note"}},
            {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Organization", "name": "Hospital"}},
        ],
    }
    doc.update(changes)
    return doc


async def test_valid_document_is_stored(client: httpx.AsyncClient) -> None:
    r = await client.post("/Bundle", json=document())
    assert r.status_code == 201, r.text
    assert (await client.get(r.headers["Location"])).json()["type"] == "document"


async def test_document_rules(client: httpx.AsyncClient) -> None:
    doc = document()
    del doc["identifier"]
    r = await client.post("/Bundle", json=doc)
    assert r.status_code == 422 and "bdl-9" in r.text
    doc = document()
    del doc["timestamp"]
    r = await client.post("/Bundle", json=doc)
    assert r.status_code == 422 and "bdl-10" in r.text
    doc = document()
    doc["entry"].reverse()
    r = await client.post("/Bundle", json=doc)
    assert r.status_code == 422 and "bdl-11" in r.text
    # the rule is per type: other Bundles are unaffected
    r = await client.post("/Bundle", json={"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 201
