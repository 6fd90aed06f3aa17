"""Conformance resources written to the server are used at once and again after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
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


async def test_definitions_written_by_another_process_apply_within_the_feed_interval(settings: Settings) -> None:
    """Two processes on one store: a profile and a SearchParameter written through one reach the other
    through the store's change feed, and so does their deletion."""
    fast = dataclasses.replace(settings, feed_interval=0.05)
    sp = {"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/fhir/SearchParameter/nick",
          "name": "nickname", "status": "active", "code": "nickname", "base": ["Patient"], "type": "string",
          "expression": "Patient.name.where(use='nickname').given", "description": "A nickname"}
    async with server(fast) as writer, server(fast) as reader:
        before = await reader.post("/Patient/$validate", params={"profile": PROFILE["url"]},
                                   json={"resourceType": "Patient"})
        assert any("not known" in e for e in _errors(before.json())), before.text
        assert (await writer.put(f"/StructureDefinition/{PROFILE['id']}", json=PROFILE)).status_code == 201
        assert (await writer.put("/SearchParameter/nickname", json=sp)).status_code == 201
        for _ in range(100):
            await asyncio.sleep(0.05)
            r = await reader.post("/Patient/$validate", params={"profile": PROFILE["url"]},
                                  json={"resourceType": "Patient"})
            strict = await reader.get("/Patient", params={"nickname": "x"}, headers={"Prefer": "handling=strict"})
            if any("birthDate" in e for e in _errors(r.json())) and strict.status_code == 200:
                break
        else:
            raise AssertionError(f"the reader never saw the profile and the parameter: {r.text} {strict.text}")
        assert (await writer.delete("/SearchParameter/nickname")).status_code == 200
        for _ in range(100):
            await asyncio.sleep(0.05)
            strict = await reader.get("/Patient", params={"nickname": "x"}, headers={"Prefer": "handling=strict"})
            if strict.status_code == 400:
                break
        else:
            raise AssertionError("the reader still searches by a deleted SearchParameter")


async def test_a_loaded_package_s_canonical_is_never_overridden(settings: Settings) -> None:
    gender = "http://hl7.org/fhir/ValueSet/administrative-gender"
    async with server(settings) as client:
        r = await client.put("/ValueSet/hijack", json={"resourceType": "ValueSet", "id": "hijack", "url": gender,
                                                        "status": "active", "compose": {"include": [
                                                            {"system": "http://example.org/x", "concept": [
                                                                {"code": "nobody"}]}]}})
        assert r.status_code == 422, r.text
        assert "hl7.fhir.r4.core#4.0.1" in r.json()["issue"][0]["diagnostics"]
        assert (await client.get("/ValueSet/hijack")).status_code == 404
        created = await client.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
        assert created.status_code == 201, created.text
