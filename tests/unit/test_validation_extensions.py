"""Extensions by URL: https://hl7.org/fhir/R4/extensibility.html."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator

EXT = "http://hl7.org/fhir/StructureDefinition/"


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def issues(res: dict[str, Any]) -> list[tuple[str, str | None]]:
    out: list[Issue] = validator().validate(res)
    return [(i.severity, i.message_id) for i in out if i.severity != "information" and i.message_id != "sd-invariant"]


def patient(**kw: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p", **kw}


def test_known_extension_with_right_value_is_clean() -> None:
    assert issues(patient(extension=[{"url": EXT + "patient-birthPlace", "valueAddress": {"city": "Seoul"}}])) == []


def test_known_extension_value_type_is_checked() -> None:
    bad = patient(extension=[{"url": EXT + "patient-birthPlace", "valueString": "Seoul"}])
    assert issues(bad) == [("error", "sd-type-not-allowed")]


def test_unknown_extension_is_a_warning() -> None:
    assert issues(patient(extension=[{"url": "http://example.org/ext/x", "valueString": "a"}])) == [
        ("warning", "ext-unknown")]


def test_unknown_modifier_extension_is_an_error() -> None:
    res = patient(modifierExtension=[{"url": "http://example.org/ext/x", "valueBoolean": True}])
    assert issues(res) == [("error", "ext-modifier-unknown")]


def test_extension_context_is_enforced() -> None:
    # patient-birthPlace has context Patient; an Observation is not one
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "extension": [{"url": EXT + "patient-birthPlace", "valueAddress": {"city": "Seoul"}}]}
    assert issues(obs) == [("error", "ext-context")]


def test_extension_on_a_primitive_has_the_primitive_as_context() -> None:
    # patient-birthTime has context Patient.birthDate: the primitive element hosting it
    good = patient(birthDate="2000-01-01", _birthDate={"extension": [
        {"url": EXT + "patient-birthTime", "valueDateTime": "2000-01-01T10:00:00+09:00"}]})
    assert issues(good) == []
    wrong = patient(gender="male", _gender={"extension": [
        {"url": EXT + "patient-birthTime", "valueDateTime": "2000-01-01T10:00:00+09:00"}]})
    assert issues(wrong) == [("error", "ext-context")]


def test_modifier_flag_must_match_the_definition() -> None:
    # data-absent-reason is not a modifier extension
    res = patient(modifierExtension=[{"url": EXT + "data-absent-reason", "valueCode": "unknown"}])
    assert ("error", "ext-context") in issues(res)


def test_relative_url_only_inside_complex_extensions() -> None:
    assert issues(patient(extension=[{"url": "local", "valueString": "a"}])) == [("error", "ext-url-format")]


def test_complex_extension_parts_are_checked_by_their_definition() -> None:
    # patient-nationality: code (CodeableConcept) and period (Period) parts
    good = patient(extension=[{"url": EXT + "patient-nationality", "extension": [
        {"url": "code", "valueCodeableConcept": {"text": "Korean"}}]}])
    assert issues(good) == []
    bad = patient(extension=[{"url": EXT + "patient-nationality", "extension": [
        {"url": "code", "valueString": "Korean"}]}])
    assert ("error", "sd-type-not-allowed") in issues(bad)
