"""$validate (https://hl7.org/fhir/R4/resource-operation-validate.html) over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CONSULT_SR = "http://fhir-exchange.org/fhir/StructureDefinition/consult-service-request"


def _severities(outcome: dict[str, Any]) -> list[str]:
    return [i["severity"] for i in outcome["issue"]]


async def test_valid_resource_answers_200_without_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "female"})
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "error" not in _severities(r.json())


async def test_invalid_resource_answers_200_with_errors_at_their_path(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "dunno",
                                                      "birthDate": "1999-13-01"})
    assert r.status_code == 200
    errors = [i for i in r.json()["issue"] if i["severity"] == "error"]
    paths = {e for i in errors for e in i.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate"} <= paths
    assert (await client.get("/Patient", params={"_summary": "count"})).json()["total"] == 0


async def test_parameters_body_with_profile_and_mode(client: httpx.AsyncClient) -> None:
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/p"}}
    plain = await client.post("/ServiceRequest/$validate", json=sr)
    assert "error" not in _severities(plain.json())
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": sr},
        {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": CONSULT_SR}]}
    r = await client.post("/ServiceRequest/$validate", json=params)
    assert r.status_code == 200
    assert "error" in _severities(r.json()), "the consult profile requires requester, performer, ..."
    q = await client.post("/ServiceRequest/$validate", params={"profile": CONSULT_SR}, json=sr)
    assert "error" in _severities(q.json())


async def test_consult_example_validates_against_its_profile(client: httpx.AsyncClient) -> None:
    sr = json.loads((ROOT / "examples/valid/ServiceRequest-consult-request.json").read_text())
    r = await client.post("/ServiceRequest/$validate", params={"profile": CONSULT_SR}, json=sr)
    assert "error" not in _severities(r.json()), r.text


async def test_unknown_profile_is_an_error_issue(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient/$validate", params={"profile": "http://example.org/nope"},
                          json={"resourceType": "Patient"})
    assert r.status_code == 200
    assert "error" in _severities(r.json())


async def test_profile_of_another_type_is_an_error_issue(client: httpx.AsyncClient) -> None:
    for other in ("string", "Observation", "HumanName"):
        r = await client.post("/Patient/$validate", json={"resourceType": "Patient"},
                              params={"profile": f"http://hl7.org/fhir/StructureDefinition/{other}"})
        assert "error" in _severities(r.json()), other


async def test_instance_level_validates_the_stored_resource_and_update_mode(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json={"resourceType": "Patient", "active": True})).json()
    pid = created["id"]
    stored = await client.get(f"/Patient/{pid}/$validate")
    assert stored.status_code == 200 and "error" not in _severities(stored.json())
    other = await client.post(f"/Patient/{pid}/$validate", params={"mode": "update"},
                              json={"resourceType": "Patient", "id": "someone-else"})
    assert "error" in _severities(other.json())
    delete_ok = await client.post(f"/Patient/{pid}/$validate", params={"mode": "delete"})
    assert "error" not in _severities(delete_ok.json())


async def test_bad_requests_are_400(client: httpx.AsyncClient) -> None:
    assert (await client.post("/Patient/$validate", params={"mode": "bogus"},
                              json={"resourceType": "Patient"})).status_code == 400
    assert (await client.post("/Patient/nope/$validate", params={"mode": "profile"})).status_code == 400
    mismatch = await client.post("/Patient/$validate", json={"resourceType": "Observation"})
    assert mismatch.status_code == 200 and "error" in _severities(mismatch.json())


async def test_capability_statement_declares_validate(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/metadata")).json()
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert "validate" in {o["name"] for o in patient.get("operation", [])}
