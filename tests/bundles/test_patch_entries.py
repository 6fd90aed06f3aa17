"""PATCH entries in batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#patch, "Patch in
Batch/Transaction"): a Binary holding a JSON Patch (application/json-patch+json, base64) or a
Parameters resource (FHIRPath Patch, https://hl7.org/fhir/R4/fhirpatch.html)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson

from tests.api.conftest import app  # noqa: F401  (the app on the session's definitions)
from tests.bundles.helpers import SYS, bundle, entry, patient, status


def json_patch(ops: list[dict[str, Any]], content_type: str = "application/json-patch+json") -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(orjson.dumps(ops)).decode()}


def fhirpath_patch(*ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts} for parts in ops]}


def add_gender(value: str) -> list[dict[str, Any]]:
    return [{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": value}]


REPLACE_FAMILY = [{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.name.family"},
                  {"name": "value", "valueString": "Park"}]




async def _new(client: httpx.AsyncClient, value: str) -> str:
    r = await client.post("/Patient", json=patient(value, name=[{"family": "Kim"}]),
                          headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_transaction_with_both_patch_formats(client: httpx.AsyncClient) -> None:
    a, b = await _new(client, "pe-1"), await _new(client, "pe-2")
    r = await client.post("", json=bundle(
        "transaction",
        entry("PATCH", f"Patient/{a}", json_patch([{"op": "add", "path": "/gender", "value": "male"}])),
        entry("PATCH", f"Patient/{b}", fhirpath_patch(add_gender("female"), REPLACE_FAMILY)),
    ))
    assert r.status_code == 200, r.text
    assert [status(e) for e in r.json()["entry"]] == [200, 200]
    assert (await client.get(f"/Patient/{a}")).json()["gender"] == "male"
    got = (await client.get(f"/Patient/{b}")).json()
    assert got["gender"] == "female" and got["name"] == [{"family": "Park"}]


async def test_conditional_fhirpath_patch_in_a_transaction(client: httpx.AsyncClient) -> None:
    a = await _new(client, "pe-3")
    r = await client.post("", json=bundle(
        "transaction", entry("PATCH", f"Patient?identifier={SYS}|pe-3", fhirpath_patch(add_gender("other")))))
    assert r.status_code == 200, r.text
    assert (await client.get(f"/Patient/{a}")).json()["gender"] == "other"


async def test_a_bad_fhirpath_patch_rolls_the_transaction_back(client: httpx.AsyncClient) -> None:
    a, b = await _new(client, "pe-4"), await _new(client, "pe-5")
    bad = [{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
           {"name": "value", "valueCode": "male"}]  # selects nothing
    r = await client.post("", json=bundle(
        "transaction",
        entry("PATCH", f"Patient/{a}", fhirpath_patch(add_gender("female"))),
        entry("PATCH", f"Patient/{b}", fhirpath_patch(bad)),
    ))
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert "replace" in issue["diagnostics"] and "Patient.gender" in issue["diagnostics"]
    assert "gender" not in (await client.get(f"/Patient/{a}")).json()


async def test_batch_entries_succeed_or_fail_alone(client: httpx.AsyncClient) -> None:
    a, b, c = await _new(client, "pe-6"), await _new(client, "pe-7"), await _new(client, "pe-8")
    r = await client.post("", json=bundle(
        "batch",
        entry("PATCH", f"Patient/{a}", fhirpath_patch(add_gender("male"))),
        entry("PATCH", f"Patient/{b}", fhirpath_patch([{"name": "type", "valueCode": "move"},
                                                       {"name": "path", "valueString": "Patient.name"},
                                                       {"name": "source", "valueInteger": 0},
                                                       {"name": "destination", "valueInteger": 3}])),
        entry("PATCH", f"Patient/{c}", json_patch([{"op": "replace", "path": "/name/0/family", "value": "Lee"}])),
        entry("PATCH", f"Patient/{c}", json_patch([{"op": "add", "path": "/active", "value": True}], "text/plain")),
    ))
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [status(e) for e in entries] == [200, 422, 200, 400]
    assert "out of range" in entries[1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert "contentType" in entries[3]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert (await client.get(f"/Patient/{a}")).json()["gender"] == "male"
    got = (await client.get(f"/Patient/{c}")).json()
    assert got["name"] == [{"family": "Lee"}] and "active" not in got


async def test_a_patch_entry_without_a_resource_is_refused(client: httpx.AsyncClient) -> None:
    a = await _new(client, "pe-9")
    r = await client.post("", json=bundle("batch", entry("PATCH", f"Patient/{a}")))
    assert r.status_code == 200, r.text
    assert status(r.json()["entry"][0]) == 400
