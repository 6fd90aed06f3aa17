"""Conformance resources written to the server are used at once and again after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from fhir_exchange.api.app import create_app
from fhir_exchange.settings import Settings

PROFILE = {
    "resourceType": "StructureDefinition", "id": "patient-with-birthdate",
    "url": "http://example.org/fhir/StructureDefinition/patient-with-birthdate", "name": "PatientWithBirthDate",
    "status": "active", "kind": "resource", "abstract": False, "type": "Patient",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient", "derivation": "constraint",
    "differential": {"element": [{"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1}]},
}
QUESTIONNAIRE = {
    "resourceType": "Questionnaire", "id": "q1", "url": "http://example.org/fhir/Questionnaire/q1",
    "status": "active", "item": [{"linkId": "age", "text": "Age", "type": "integer", "required": True}],
}


@asynccontextmanager
async def server(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as client:
            yield client


def _errors(outcome: dict[str, Any]) -> list[str]:
    return [i.get("diagnostics", "") for i in outcome["issue"] if i["severity"] == "error"]


async def _check(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient/$validate", params={"profile": PROFILE["url"]}, json={"resourceType": "Patient"})
    assert any("birthDate" in e for e in _errors(r.json())), r.text
    ok = await client.post("/Patient/$validate", params={"profile": PROFILE["url"]},
                           json={"resourceType": "Patient", "birthDate": "1990-01-01"})
    assert not _errors(ok.json()), ok.text
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": QUESTIONNAIRE["url"],
          "item": [{"linkId": "age", "answer": [{"valueString": "old"}]}]}
    bad = await client.post("/QuestionnaireResponse/$validate", json=qr)
    assert _errors(bad.json()), "an answer of the wrong type for the stored Questionnaire"


async def test_written_definitions_survive_a_restart(settings: Settings) -> None:
    async with server(settings) as client:
        assert (await client.put(f"/StructureDefinition/{PROFILE['id']}", json=PROFILE)).status_code == 201
        assert (await client.put("/Questionnaire/q1", json=QUESTIONNAIRE)).status_code == 201
        await _check(client)
    async with server(settings) as client:  # a new process on the same store
        await _check(client)
        assert (await client.delete(f"/StructureDefinition/{PROFILE['id']}")).status_code == 200
        r = await client.post("/Patient/$validate", params={"profile": PROFILE["url"]},
                              json={"resourceType": "Patient"})
        assert any("not known" in e for e in _errors(r.json())), r.text


SEARCH_PARAMETER = {
    "resourceType": "SearchParameter", "id": "patient-nickname", "url": "http://example.org/fhir/SearchParameter/nick",
    "name": "nickname", "status": "active", "description": "A name given as a nickname", "code": "nickname",
    "base": ["Patient"], "type": "string", "expression": "Patient.name.where(use = 'nickname').given",
}


async def test_reindex_command_uses_search_parameters_written_to_the_server(settings: Settings) -> None:
    from fhir_exchange.cli import main

    async with server(settings) as client:
        await client.post("/Patient", json={"resourceType": "Patient",
                                            "name": [{"use": "nickname", "given": ["Bongsu"]}]})
        assert (await client.put("/SearchParameter/patient-nickname", json=SEARCH_PARAMETER)).status_code == 201
    # The command runs its own event loop, as from a shell, after the server stopped.
    assert await asyncio.to_thread(main, ["reindex", "--data-dir", str(settings.data_dir)]) == 0
    async with server(settings) as client:
        r = await client.get("/Patient", params={"nickname": "bong"}, headers={"Prefer": "handling=strict"})
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 1
