"""Structural rules of https://hl7.org/fhir/R4/json.html and validation.html, one test per rule."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator

INPUTS = Path(__file__).resolve().parents[1] / "data" / "fhirpath-r4" / "inputs"


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def errors(resource: Any, **kw: Any) -> list[Issue]:
    return [i for i in validator().validate(resource, **kw) if i.severity in ("error", "fatal")]


def only(resource: Any, message_id: str, expression: str | None = None, code: str | None = None) -> Issue:
    errs = errors(resource)
    assert [e.message_id for e in errs] == [message_id], errs
    if expression is not None:
        assert errs[0].expression == (expression,), errs
    if code is not None:
        assert errs[0].code == code
    return errs[0]


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Minsu Kim</div>'},
    "active": True,
    "name": [{"family": "Kim", "given": ["Minsu", "J"]}],
    "gender": "male",
    "birthDate": "1970-03-04",
    "multipleBirthInteger": 2,
}


def patient(**changes: Any) -> dict[str, Any]:
    p = copy.deepcopy(PATIENT)
    for k, v in changes.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    return p


def test_valid_patient_has_no_issues() -> None:
    assert validator().validate(patient()) == []


def test_resource_must_be_object() -> None:
    only([PATIENT], "json-not-object", code="structure")


def test_resource_type_required() -> None:
    only({"id": "x"}, "json-resourcetype-missing", code="structure")


def test_resource_type_unknown() -> None:
    only({"resourceType": "Patiant", "id": "x"}, "json-resourcetype-unknown")


def test_abstract_resource_type_rejected() -> None:
    only({"resourceType": "DomainResource", "id": "x"}, "json-resourcetype-unknown")


def test_resource_type_must_match_expected() -> None:
    errs = errors(patient(), resource_type="Observation")
    assert [e.message_id for e in errs] == ["json-resourcetype-mismatch"]


def test_unknown_element() -> None:
    only(patient(nickname="x"), "json-unknown-element", "Patient.nickname", "structure")


def test_unknown_element_nested() -> None:
    only(patient(name=[{"family": "Kim", "middle": "x"}]), "json-unknown-element", "Patient.name[0].middle")


def test_array_expected_for_repeating_element() -> None:
    only(patient(name={"family": "Kim"}), "json-array-expected", "Patient.name", "structure")


def test_array_not_allowed_for_single_element() -> None:
    only(patient(gender=["male"]), "json-array-unexpected", "Patient.gender", "structure")


def test_empty_array() -> None:
    only(patient(name=[]), "json-empty-array", "Patient.name")


def test_empty_object() -> None:
    only(patient(name=[{}]), "json-empty-object", "Patient.name[0]")


def test_null_single_value() -> None:
    only(patient(gender=None) | {"gender": None}, "json-null", "Patient.gender")


def test_null_in_primitive_array_without_companion() -> None:
    only(patient(name=[{"given": ["a", None]}]), "json-null", "Patient.name[0].given[1]")


def test_null_in_primitive_array_aligned_with_companion_is_valid() -> None:
    name = {"given": ["a", None], "_given": [None, {"extension": [{"url": "http://x.org/e", "valueString": "v"}]}]}
    assert errors(patient(name=[name])) == []


def test_companion_array_must_align() -> None:
    name = {"given": ["a", "b"], "_given": [{"id": "g1"}]}
    only(patient(name=[name]), "json-primitive-companion-misaligned", "Patient.name[0].given")


def test_companion_of_single_primitive() -> None:
    assert errors(patient(_gender={"id": "g"})) == []
    only(patient(_gender={"foo": 1}), "json-unknown-element", "Patient.gender.foo")


def test_companion_must_not_be_empty() -> None:
    only(patient(_gender={}), "json-empty-object", "Patient.gender")


def test_companion_on_non_primitive_is_unknown() -> None:
    only(patient(_name=[{"id": "x"}]), "json-unknown-element", "Patient._name")


def test_primitive_only_in_companion_satisfies_required() -> None:
    obs = {"resourceType": "Observation", "_status": {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]},
        "code": {"text": "x"}}
    assert errors(obs) == []


def test_cardinality_min() -> None:
    issue = only({"resourceType": "Observation", "code": {"text": "x"}}, "sd-cardinality-min", "Observation.status",
                 "required")
    assert "Observation.status" in issue.diagnostics


def test_cardinality_min_in_backbone() -> None:
    only(patient(link=[{"type": "seealso"}]), "sd-cardinality-min", "Patient.link[0].other")


def test_choice_variants_expand() -> None:
    assert errors(patient(multipleBirthInteger=None, multipleBirthBoolean=True)) == []
    only(patient(multipleBirthString="x"), "json-unknown-element", "Patient.multipleBirthString")


def test_choice_only_one_variant() -> None:
    only(patient(multipleBirthBoolean=True), "json-choice-multiple")


def test_choice_expression_names_the_type() -> None:
    only(patient(multipleBirthInteger="2"), "primitive-json-type", "Patient.multipleBirth.ofType(integer)")


def test_boolean_must_be_json_bool() -> None:
    only(patient(active="true"), "primitive-json-type", "Patient.active", "structure")


def test_integer_must_be_json_integer() -> None:
    only(patient(multipleBirthInteger=1.5), "primitive-json-type")


def test_integer_range_32_bit() -> None:
    only(patient(multipleBirthInteger=2**31), "primitive-range", code="value")


def test_positive_int_range() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueSampledData": {"origin": {"value": 1}, "period": 1, "dimensions": 0, "data": "1 2"}}
    only(obs, "primitive-range", "Observation.value.ofType(SampledData).dimensions")


def test_decimal_must_be_number() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "1"}}
    only(obs, "primitive-json-type", "Observation.value.ofType(Quantity).value")


def test_string_must_be_string() -> None:
    only(patient(name=[{"family": 1}]), "primitive-json-type", "Patient.name[0].family")


def test_empty_string() -> None:
    only(patient(name=[{"family": ""}]), "primitive-empty", "Patient.name[0].family", "value")


def test_date_format() -> None:
    only(patient(birthDate="1970-3-4"), "primitive-format", "Patient.birthDate", "value")


def test_date_must_be_real() -> None:
    only(patient(birthDate="2021-02-29"), "primitive-format", "Patient.birthDate")
    assert errors(patient(birthDate="2020-02-29")) == []


def test_datetime_with_time_needs_timezone() -> None:
    only(patient(deceasedDateTime="2020-01-01T10:00:00"), "primitive-format")
    assert errors(patient(deceasedDateTime="2020-01-01T10:00:00+09:00")) == []


def test_instant_needs_full_precision() -> None:
    only(patient(meta={"lastUpdated": "2020-01-01"}), "primitive-format", "Patient.meta.lastUpdated")


def test_code_whitespace() -> None:
    only(patient(gender=" male"), "primitive-format", "Patient.gender")


def test_string_surrounding_whitespace_is_a_warning() -> None:
    issues = validator().validate(patient(name=[{"family": "Kim "}]))
    assert [(i.severity, i.message_id) for i in issues] == [("warning", "primitive-whitespace")]


def test_string_size_limit() -> None:
    only(patient(name=[{"family": "x" * (1024 * 1024 + 1)}]), "primitive-too-long")


def test_uri_no_whitespace() -> None:
    only(patient(implicitRules="http://a b"), "primitive-format", "Patient.implicitRules")


def test_base64() -> None:
    att = {"contentType": "image/png", "data": "abc"}
    only(patient(photo=[att]), "primitive-format", "Patient.photo[0].data")
    assert errors(patient(photo=[{"contentType": "image/png", "data": "aGVsbG8="}])) == []


def test_resource_id_format() -> None:
    only(patient(id="a_b"), "resource-id-format", "Patient.id", "value")
    only(patient(id="x" * 65), "resource-id-format")
    assert errors(patient(id="A-1.b")) == []


def test_element_id_is_a_plain_string() -> None:
    assert errors(patient(name=[{"id": "any string_with stuff", "family": "Kim"}])) == []


def test_object_expected_for_complex() -> None:
    only(patient(maritalStatus="M"), "json-object-expected", "Patient.maritalStatus")


def test_extension_url_required() -> None:
    only(patient(extension=[{"valueString": "x"}]), "ext-url-missing", "Patient.extension[0]")


def test_extension_value_and_children() -> None:
    ext = {"url": "http://x.org/e", "valueString": "x", "extension": [{"url": "a", "valueString": "y"}]}
    only(patient(extension=[ext]), "ext-value-and-children", "Patient.extension[0]")


def test_extension_without_value_or_children() -> None:
    only(patient(extension=[{"url": "http://x.org/e"}]), "ext-no-value-or-children")


def test_extension_value_types() -> None:
    assert errors(patient(extension=[{"url": "http://x.org/e", "valueHumanName": {"family": "x"}}])) == []
    only(patient(extension=[{"url": "http://x.org/e", "valueFoo": 1}]), "json-unknown-element",
         "Patient.extension[0].valueFoo")


def test_contained_resource_validated_as_its_type() -> None:
    org = {"resourceType": "Organization", "id": "o1", "name": "A", "foo": 1}
    only(patient(contained=[org], managingOrganization={"reference": "#o1"}), "json-unknown-element",
         "Patient.contained[0].foo")


def test_contained_resource_needs_resource_type() -> None:
    only(patient(contained=[{"id": "o1"}], managingOrganization={"reference": "#o1"}), "json-resourcetype-missing",
         "Patient.contained[0]")


def test_bundle_entry_resource_validated() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": "urn:uuid:1b6f5a7c-4f83-4a4e-9d0f-2d7b0b0a0a01",
                         "resource": {"resourceType": "Patient", "gender": "x"}}]}
    only(bundle, "tx-code-not-in-valueset", "Bundle.entry[0].resource.gender", "code-invalid")


def test_parameters_resource_validated() -> None:
    params = {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"resourceType": "Basic"}}]}
    only(params, "sd-cardinality-min", "Parameters.parameter[0].resource.code")


def test_resource_with_only_resource_type_is_valid() -> None:
    # The HL7 validator accepts {"resourceType": "Parameters"} (validator case params-empty-r4).
    assert errors({"resourceType": "Parameters"}) == []


def test_content_reference_recurses() -> None:
    q = {"resourceType": "Questionnaire", "status": "active",
         "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "bogus": 1}]}]}
    only(q, "json-unknown-element", "Questionnaire.item[0].item[0].bogus")


def test_required_binding_code() -> None:
    only(patient(gender="unknown-gender"), "tx-code-not-in-valueset", "Patient.gender", "code-invalid")


def test_required_binding_codeable_concept() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                            "code": "masked"}]}}
    assert errors(obs) == []


def test_required_binding_status_in_observation() -> None:
    only({"resourceType": "Observation", "status": "done", "code": {"text": "x"}}, "tx-code-not-in-valueset",
         "Observation.status")


def test_unverifiable_code_is_information_not_error() -> None:
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "99999-9"}]},
           "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "kg"}}
    assert errors(obs) == []


def test_issues_sorted_and_unique() -> None:
    bad = patient(gender="x", active="y", foo=1, name=[{"family": ""}])
    issues = validator().validate(bad)
    keys = [(i.severity, i.expression, i.message_id) for i in issues]
    assert len(keys) == len(set(keys))
    assert keys == sorted(keys)
    assert [i.expression[0] for i in issues] == ["Patient.active", "Patient.foo", "Patient.gender",
                                                  "Patient.name[0].family"]


def test_unknown_profile_is_a_warning() -> None:
    issues = validator().validate(patient(), profiles=["http://example.org/StructureDefinition/nope"])
    assert [(i.severity, i.message_id) for i in issues] == [("warning", "sd-profile-unknown")]


VALID_INPUTS = [
    "appointment-examplereq.json", "observation-example.json", "patient-example-period.json",
    "patient-example.json", "questionnaire-example.json", "valueset-example-expansion.json",
]
# These inputs of the FHIRPath suite are not valid resources (the suite only needs them to evaluate
# expressions); each fails exactly for the reason given.
INVALID_INPUTS = {
    # concept 'chol-mass' appears twice: csd-1 (codes unique), checked with fhirpathpy too
    "codesystem-example.json": {"sd-invariant"},
    # the contained Organization has neither name nor identifier (org-1) and is referenced as "1",
    # not "#1", so nothing refers to it (dom-3)
    "patient-container-example.json": {"sd-invariant", "contained-not-referenced"},
    # a fragment: only supportingInfo and item, none of the 8 required elements
    "explanationofbenefit-example.json": {"sd-cardinality-min"},
    # converted from XML with valueUuid as an object {"value": ...} instead of a string
    "parameters-example-types.json": {"primitive-json-type"},
    # _given has one entry for two given names (json.html: the arrays must align)
    "patient-name-extensions.json": {"json-primitive-companion-misaligned"},
}


@pytest.mark.parametrize("name", VALID_INPUTS)
def test_fhirpath_suite_inputs_are_valid(name: str) -> None:
    assert errors(json.loads((INPUTS / name).read_text())) == []


@pytest.mark.parametrize("name", sorted(INVALID_INPUTS))
def test_fhirpath_suite_fragments_fail_for_their_reason(name: str) -> None:
    assert {e.message_id for e in errors(json.loads((INPUTS / name).read_text()))} == INVALID_INPUTS[name]
