"""The validator never raises on client input (https://hl7.org/fhir/R4/validation.html: every problem is
an OperationOutcome issue): arbitrary JSON, anywhere in a resource, gives issues, not exceptions."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator
from fhir_exchange.validation.structure import MAX_NESTING

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["#", "#x", "Patient/1", "urn:uuid:x", "2020-13-40", "", " a "]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["url", "value", "valueString", "reference", "coding", "system", "code", "extension",
                         "resourceType", "id", "_value", "contained", "resource", "entry", "div", "zz"]),
        children, max_size=4),
    max_leaves=12,
)

BASES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p", "name": [{"family": "K", "given": ["A"]}], "gender": "male",
     "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                    "valueAddress": {"city": "S"}}],
     "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}],
     "managingOrganization": {"reference": "#o"}},
    {"resourceType": "Bundle", "type": "document", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Composition", "status": "final",
                                               "type": {"text": "t"}, "date": "2020", "title": "t",
                                               "author": [{"reference": "urn:uuid:2"}]}}]},
    {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": "#q",
     "contained": [{"resourceType": "Questionnaire", "id": "q", "status": "active",
                    "item": [{"linkId": "a", "type": "choice", "answerValueSet": "#vs"}]}],
     "item": [{"linkId": "a", "answer": [{"valueCoding": {"code": "x"}}]}]},
    {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
     "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "kg"},
     "referenceRange": [{"low": {"value": 1}, "high": {"value": 2}}]},
    # a core profile with slicing (category, code.coding, component), walked by the profile validator
    {"resourceType": "Observation", "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/bp"]},
     "status": "final", "subject": {"reference": "Patient/1"}, "effectiveDateTime": "2020-01-01",
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                               "code": "vital-signs"}]}],
     "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]},
]


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(BASES))), json_values, st.data())
def test_garbage_anywhere_gives_issues_not_exceptions(base: int, garbage: Any, data: st.DataObject) -> None:
    res = copy.deepcopy(BASES[base])
    path = data.draw(st.sampled_from(_paths(res)[1:]))
    target: Any = res
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = garbage
    issues = validator().validate(res)
    assert all(i.severity in ("fatal", "error", "warning", "information") for i in issues)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_garbage_as_the_resource(garbage: Any) -> None:
    validator().validate(garbage)  # type: ignore[arg-type]


@pytest.mark.slow
@settings(max_examples=10000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(BASES))), json_values, st.data())
def test_garbage_anywhere_long(base: int, garbage: Any, data: st.DataObject) -> None:
    test_garbage_anywhere_gives_issues_not_exceptions.hypothesis.inner_test(base, garbage, data)  # type: ignore[attr-defined]


def _nested_questionnaire(levels: int) -> dict[str, Any]:
    """Items nested ``levels`` deep, built without recursion (as a parser deeper than orjson's would)."""
    item: dict[str, Any] = {"linkId": "leaf", "type": "string", "text": "t"}
    for i in range(levels):
        item = {"linkId": f"l{i}", "type": "group", "text": "t", "item": [item]}
    return {"resourceType": "Questionnaire", "status": "draft", "item": [item]}


@pytest.mark.parametrize("levels", [MAX_NESTING - 3, MAX_NESTING, 5_000, 30_000])
def test_one_nesting_limit_with_or_without_the_compiled_build(levels: int) -> None:
    # The compiled build's recursion is not bounded by the interpreter: 10,000 levels crashed the
    # process before the walk counted them. The root and the leaf are two objects more than ``levels``.
    issues = validator().validate(_nested_questionnaire(levels))
    errors = [i.message_id for i in issues if i.severity == "error"]
    assert errors == ([] if levels + 2 <= MAX_NESTING else ["too-deep"]), errors[:3]
