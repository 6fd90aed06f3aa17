"""The profile walker counts, rather than checks, values of elements a profile narrows only in
cardinality: the issues must be exactly those of the full per-value walk."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator
from fhir_exchange.validation.profile import ProfileValidator
from tests.pure_python import rerun_as_python

URL = "http://example.org/fhir/StructureDefinition/"
PROFILE = {
    "resourceType": "StructureDefinition", "id": "card", "url": URL + "card", "name": "Card", "status": "active",
    "kind": "resource", "abstract": False, "type": "Observation",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation", "derivation": "constraint",
    "differential": {"element": [
        {"path": "Observation.performer", "min": 2, "max": "3"},
        {"path": "Observation.issued", "min": 1},
        {"path": "Observation.note", "max": "0"},
        {"path": "Observation.identifier", "min": 1},
    ]},
}
BASE: dict[str, Any] = {
    "resourceType": "Observation", "status": "final", "code": {"text": "x"},
    "performer": [{"reference": "Practitioner/a"}, {"reference": "Practitioner/b"}],
    "issued": "2020-01-01T00:00:00Z", "identifier": [{"value": "1"}],
}


def variants() -> list[dict[str, Any]]:
    out = []
    for changes in ({}, {"performer": [{"reference": "Practitioner/a"}]},
                    {"performer": [{"reference": "Practitioner/a"}] * 4}, {"issued": None},
                    {"issued": None, "_issued": {"extension": [{"url": "http://e", "valueString": "x"}]}},
                    {"note": [{"text": "n"}]}, {"identifier": []}, {"identifier": None},
                    {"performer": [{"resourceType": "Patient", "id": "p"}, {"reference": "Practitioner/b"}]},
                    {"performer": [None, {"reference": "Practitioner/b"}]},
                    {"performer": {"reference": "Practitioner/a"}}):
        o = copy.deepcopy(BASE)
        for k, v in changes.items():
            if v is None:
                o.pop(k, None)
            else:
                o[k] = v
        out.append(o)
    return out


def issues(v: Validator, res: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(i.severity, i.code, i.message_id, i.diagnostics, i.expression)
            for i in v.validate(res, profiles=[URL + "card"])]


@pytest.mark.parametrize("res", variants())
def test_counting_gives_the_issues_of_the_full_walk(res: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                    request: pytest.FixtureRequest) -> None:
    if rerun_as_python(request):  # the full walk replaces a method that compiled code calls directly
        return
    defs = Definitions.load()
    defs.add(copy.deepcopy(PROFILE))
    counting = issues(Validator(defs), res)
    monkeypatch.setattr(ProfileValidator, "_is_count_only", lambda self, elem: False)
    assert counting == issues(Validator(defs), res)


def test_cardinality_only_elements_are_counted() -> None:
    defs = Definitions.load()
    defs.add(copy.deepcopy(PROFILE))
    v = Validator(defs)
    found = [i.diagnostics for i in v.validate(variants()[5], profiles=[URL + "card"]) if i.severity == "error"]
    assert found == ["Observation.note: max allowed = 0, but found 1"]
    found = [i.diagnostics for i in v.validate(variants()[3], profiles=[URL + "card"]) if i.severity == "error"]
    assert found == ["Observation.issued: minimum required = 1, but only found 0"]
    schema = v.profiles.schema(URL + "card")
    assert schema is not None
    counted = {c.name: c.count_only for c in schema.root.children if c.count_only is not None}
    # performer has (core) target profiles: checked per value; the others are counted.
    assert counted == {"performer": False, "issued": True, "note": True, "identifier": True}, counted
