"""The validator answers FHIRPath's ``memberOf()`` and ``conformsTo()`` inside invariants
(https://hl7.org/fhir/R4/fhirpath.html#functions): memberOf by its terminology, conformsTo by
validating against the named profile, as the reference validator does."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.schema import Constraint

VITALS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
HEART_RATE: dict[str, Any] = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-01-02T10:00:00Z",
    "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
}


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def issues(c: Constraint, node: dict[str, Any]) -> list[tuple[str, str]]:
    sink = IssueSink()
    validator().invariants.check((c,), node, "Observation", "Observation", node, node, sink)
    return [(i.severity, i.message_id) for i in sink.result()]


def test_conforms_to_validates_against_the_profile() -> None:
    v = validator()
    assert v._conforms_to(HEART_RATE, VITALS)
    no_category = {k: x for k, x in HEART_RATE.items() if k != "category"}
    assert not v._conforms_to(no_category, VITALS)
    rule = Constraint("c-1", "error", "vital", f"conformsTo('{VITALS}')", None)
    assert issues(rule, HEART_RATE) == []
    assert issues(rule, no_category) == [("error", "sd-invariant")]


def test_conforms_to_an_unknown_profile_is_not_evaluated_rather_than_passed() -> None:
    rule = Constraint("c-2", "error", "unknown", "conformsTo('http://example.org/StructureDefinition/nowhere')", None)
    assert issues(rule, HEART_RATE) == [("information", "sd-invariant-not-evaluated")]


def test_member_of_is_wired_in_the_validator() -> None:
    rule = Constraint("m-1", "error", "status", "status.memberOf('http://hl7.org/fhir/ValueSet/observation-status')",
                      None)
    assert issues(rule, HEART_RATE) == []
    assert issues(rule, {**HEART_RATE, "status": "nonsense"}) == [("error", "sd-invariant")]
