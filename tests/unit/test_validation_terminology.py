"""Local ValueSet expansion (https://hl7.org/fhir/R4/valueset.html#expansion) and code validation."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.terminology import Terminology


@lru_cache(maxsize=1)
def tx() -> Terminology:
    return Terminology(Definitions.load())


def fresh() -> tuple[Definitions, Terminology]:
    defs = Definitions.load()
    return defs, Terminology(defs)


def test_whole_system_include() -> None:
    exp = tx().expand("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
    assert exp is not None
    assert set(exp.codes["http://hl7.org/fhir/administrative-gender"]) == {"male", "female", "other", "unknown"}


def test_code_without_system_is_looked_up_in_every_system() -> None:
    vs = "http://hl7.org/fhir/ValueSet/observation-status"
    assert tx().validate_code(vs, None, "final").valid is True
    assert tx().validate_code(vs, None, "done").valid is False


def test_wrong_system_is_invalid() -> None:
    vs = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert tx().validate_code(vs, "http://example.org/other", "male").valid is False


def test_unknown_code_in_known_system_names_the_system() -> None:
    check = tx().validate_code("http://hl7.org/fhir/ValueSet/administrative-gender",
                               "http://hl7.org/fhir/administrative-gender", "mal")
    assert check.valid is False and "not in code system" in check.message


def test_snomed_and_loinc_are_unverified_not_wrong() -> None:
    # observation-codes is all of LOINC: nothing can be decided locally.
    assert tx().validate_code("http://hl7.org/fhir/ValueSet/observation-codes", "http://loinc.org",
                              "00000-0").valid is None
    # clinical-findings is a SNOMED is-a filter.
    assert tx().validate_code("http://hl7.org/fhir/ValueSet/clinical-findings", "http://snomed.info/sct",
                              "1").valid is None


def test_unknown_value_set() -> None:
    assert tx().expand("http://example.org/ValueSet/none") is None
    assert tx().validate_code("http://example.org/ValueSet/none", None, "x").valid is None


def _add(defs: Definitions, *resources: dict[str, Any]) -> None:
    for r in resources:
        defs.add(r)


CS: dict[str, Any] = {
    "resourceType": "CodeSystem", "id": "t", "url": "http://example.org/cs", "status": "active",
    "content": "complete", "hierarchyMeaning": "is-a",
    "concept": [
        {"code": "animal", "concept": [
            {"code": "dog", "concept": [{"code": "puppy"}]},
            {"code": "cat", "property": [{"code": "legs", "valueInteger": 4}]},
        ]},
        {"code": "plant"},
    ],
}


def test_is_a_and_descendent_of_filters() -> None:
    defs, t = fresh()
    _add(defs, CS,
         {"resourceType": "ValueSet", "url": "http://example.org/vs/isa", "status": "active", "compose": {
             "include": [{"system": "http://example.org/cs",
                          "filter": [{"property": "concept", "op": "is-a", "value": "dog"}]}]}},
         {"resourceType": "ValueSet", "url": "http://example.org/vs/desc", "status": "active", "compose": {
             "include": [{"system": "http://example.org/cs",
                          "filter": [{"property": "concept", "op": "descendent-of", "value": "animal"}]}]}})
    isa = t.expand("http://example.org/vs/isa")
    desc = t.expand("http://example.org/vs/desc")
    assert isa is not None and desc is not None
    assert set(isa.codes["http://example.org/cs"]) == {"dog", "puppy"}
    assert set(desc.codes["http://example.org/cs"]) == {"dog", "puppy", "cat"}


def test_exclude_and_nested_import_intersection() -> None:
    defs, t = fresh()
    _add(defs, CS,
         {"resourceType": "ValueSet", "url": "http://example.org/vs/all", "status": "active",
          "compose": {"include": [{"system": "http://example.org/cs"}],
                      "exclude": [{"system": "http://example.org/cs", "concept": [{"code": "plant"}]}]}},
         {"resourceType": "ValueSet", "url": "http://example.org/vs/some", "status": "active",
          "compose": {"include": [{"system": "http://example.org/cs",
                                   "concept": [{"code": "plant"}, {"code": "cat"}]}]}},
         {"resourceType": "ValueSet", "url": "http://example.org/vs/both", "status": "active",
          "compose": {"include": [{"valueSet": ["http://example.org/vs/all", "http://example.org/vs/some"]}]}})
    assert t.validate_code("http://example.org/vs/all", "http://example.org/cs", "plant").valid is False
    both = t.expand("http://example.org/vs/both")
    assert both is not None and set(both.codes["http://example.org/cs"]) == {"cat"}


def test_concept_list_of_unknown_system_is_definitive() -> None:
    defs, t = fresh()
    _add(defs, {"resourceType": "ValueSet", "url": "http://example.org/vs/kcd", "status": "active",
                "compose": {"include": [{"system": "http://www.hl7korea.or.kr/CodeSystem/kcd-8",
                                         "concept": [{"code": "A00"}]}]}})
    vs = "http://example.org/vs/kcd"
    assert t.validate_code(vs, "http://www.hl7korea.or.kr/CodeSystem/kcd-8", "A00").valid is True
    assert t.validate_code(vs, "http://www.hl7korea.or.kr/CodeSystem/kcd-8", "B00").valid is False


def test_not_present_code_system_is_unverified() -> None:
    defs, t = fresh()
    _add(defs, {"resourceType": "CodeSystem", "url": "http://example.org/kcd", "status": "active",
                "content": "not-present"},
         {"resourceType": "ValueSet", "url": "http://example.org/vs/kcd-all", "status": "active",
          "compose": {"include": [{"system": "http://example.org/kcd"}]}})
    assert t.validate_code("http://example.org/vs/kcd-all", "http://example.org/kcd", "A00").valid is None


def test_generation_change_invalidates_cache() -> None:
    defs, t = fresh()
    vs = {"resourceType": "ValueSet", "url": "http://example.org/vs/g", "status": "active",
          "compose": {"include": [{"system": "http://example.org/g", "concept": [{"code": "a"}]}]}}
    _add(defs, vs)
    assert t.validate_code("http://example.org/vs/g", "http://example.org/g", "b").valid is False
    vs2 = {**vs, "compose": {"include": [{"system": "http://example.org/g", "concept": [{"code": "b"}]}]}}
    _add(defs, vs2)
    assert t.validate_code("http://example.org/vs/g", "http://example.org/g", "b").valid is True


def test_import_cycle_terminates() -> None:
    defs, t = fresh()
    _add(defs,
         {"resourceType": "ValueSet", "url": "http://example.org/vs/a", "status": "active",
          "compose": {"include": [{"valueSet": ["http://example.org/vs/b"]}]}},
         {"resourceType": "ValueSet", "url": "http://example.org/vs/b", "status": "active",
          "compose": {"include": [{"valueSet": ["http://example.org/vs/a"]}]}})
    assert t.validate_code("http://example.org/vs/a", "http://x", "y").valid is None
