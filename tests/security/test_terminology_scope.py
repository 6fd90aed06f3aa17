"""Terminology operations read the shared directory: they need the read permission of their type
(ValueSet, CodeSystem, ConceptMap) in the token's scopes, and nothing else."""

from __future__ import annotations

from tests.security.conftest import Exchange

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


async def test_terminology_operations_need_the_read_scope_of_their_type(exchange: Exchange) -> None:
    patients = await exchange.as_(exchange.a, "system/Patient.rs")
    async with patients:
        r = await patients.get("/ValueSet/$expand", params={"url": GENDER_VS})
        assert r.status_code == 403 and "ValueSet" in r.text
        r = await patients.get("/CodeSystem/$lookup", params={"system": ACT_CODE, "code": "AMB"})
        assert r.status_code == 403
    terms = await exchange.as_(exchange.a, "system/ValueSet.r system/CodeSystem.r")
    async with terms:
        r = await terms.get("/ValueSet/$expand", params={"url": GENDER_VS, "filter": "fe"})
        assert r.status_code == 200 and [c["code"] for c in r.json()["expansion"]["contains"]] == ["female"]
        r = await terms.post("/CodeSystem/$subsumes", json={"resourceType": "Parameters", "parameter": [
            {"name": "system", "valueUri": ACT_CODE}, {"name": "codeA", "valueCode": "_ActEncounterCode"},
            {"name": "codeB", "valueCode": "AMB"}]})
        assert r.status_code == 200 and r.json()["parameter"] == [{"name": "outcome", "valueCode": "subsumes"}]
        # ConceptMap was not granted.
        r = await terms.get("/ConceptMap/$translate", params={"system": GENDER_VS, "code": "male"})
        assert r.status_code == 403
