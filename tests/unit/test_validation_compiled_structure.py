"""The compiled structural walk (issue 15, speed): what it remembers and what it decides early must not
change a verdict. https://hl7.org/fhir/R4/validation.html.

Each test validates the same content more than once (the second time through the caches) or in two
places, and asserts the issues a client gets: message, severity and the exact expression.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.structure import WalkContext, render
from fhir_exchange.validation.xhtml import check_div


@lru_cache(maxsize=1)
def definitions() -> Definitions:
    return Definitions.load()


@lru_cache(maxsize=2)
def validator(invariants: bool = True) -> Validator:
    return Validator(definitions(), invariants=invariants)


def issues(resource: dict[str, Any], invariants: bool = True) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(i.severity, i.message_id, i.expression) for i in validator(invariants).validate(resource)]


def test_location_renders_as_fhirpath() -> None:
    loc = ((("Patient", "name"), "given", 1), "extension", 0)
    assert render(loc) == "Patient.name.given[1].extension[0]"
    assert render("Bundle") == "Bundle"


def test_bad_code_is_reported_at_each_element_every_time() -> None:
    # The binding's verdict on a bad code is remembered per element: it must come back each time,
    # with the path of the element where it is found now.
    patient = {"resourceType": "Patient", "gender": "mal",
               "contact": [{"gender": "mal", "name": {"family": "A"}}, {"gender": "femal", "name": {"family": "B"}}]}
    first = issues(patient)
    again = issues(copy.deepcopy(patient))
    assert first == again
    bad = sorted(e for s, m, e in first if m == MsgId.CODE_NOT_IN_VALUESET)
    assert bad == [("Patient.contact[0].gender",), ("Patient.contact[1].gender",), ("Patient.gender",)]


def test_bad_coding_is_reported_every_time() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "not-a-category"}]}],
           "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                            "code": "nonsense"}]}}
    first = validator().validate(obs)
    second = validator().validate(copy.deepcopy(obs))
    assert first == second
    assert any(i.expression == ("Observation.dataAbsentReason",) and i.severity == "warning" for i in first), first


def test_structural_issues_do_not_depend_on_invariants() -> None:
    # Validator(invariants=False) walks with tables that collect no invariant sites: the structure
    # verdict is the same.
    bad = {"resourceType": "Observation", "status": "final", "code": {"coding": [{}]}, "subject": [{"reference": "x"}],
           "valueQuantity": {"value": "1"}, "valueString": "a", "period": {"start": 3}, "_status": {"id": 1}}
    fhirpath = (MsgId.INVARIANT, MsgId.INVARIANT_UNEVALUATED)  # (and the native dom-6, in both)
    with_inv = [i for i in issues(bad) if i[1] not in fhirpath]
    without = [i for i in issues(bad, invariants=False) if i[1] not in fhirpath]
    assert with_inv == without
    assert ("error", MsgId.CHOICE_MULTIPLE, ("Observation.valueString",)) in without or \
        ("error", MsgId.CHOICE_MULTIPLE, ("Observation.valueQuantity",)) in without
    assert ("error", MsgId.ARRAY_UNEXPECTED, ("Observation.subject",)) in without
    assert ("error", MsgId.EMPTY_OBJECT, ("Observation.code.coding[0]",)) in without


def test_without_invariants_no_profile_constraint_is_evaluated_either() -> None:
    # invariants=False means no FHIRPath constraint at all: the core ones and a profile's own (vs-2 of
    # the core vital signs profile), while the profile's structural rules (cardinality) still hold.
    vs = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    obs = {"resourceType": "Observation", "meta": {"profile": [vs]}, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "effectiveDateTime": "2020-01-01", "subject": {"reference": "Patient/1"}}
    with_inv = issues(obs)
    without = issues(obs, invariants=False)
    assert any(m == MsgId.INVARIANT and s == "error" for s, m, _ in with_inv), with_inv  # vs-2: no value
    # Left: dom-6 (no narrative), a warning the walk decides natively in both.
    assert [i for i in without if i[1] in (MsgId.INVARIANT, MsgId.INVARIANT_UNEVALUATED)] == [
        ("warning", MsgId.INVARIANT, ("Observation",))], without
    fhirpath = (MsgId.INVARIANT, MsgId.INVARIANT_UNEVALUATED)
    assert [i for i in with_inv if i[1] not in fhirpath] == [i for i in without if i[1] not in fhirpath]
    assert any(e == ("Observation.category",) for _, _, e in without), without  # the profile's min 1


def test_walk_collects_sites_only_when_asked() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "effectivePeriod": {"start": "2020-01-01"}, "subject": {"reference": "Patient/1"}}
    full, lean = WalkContext(IssueSink()), WalkContext(IssueSink(), collect_invariants=False)
    validator().structure.validate_resource(obs, "", full)
    validator().structure.validate_resource(obs, "", lean)
    assert {v.path for v in full.invariants} >= {"Observation", "Observation.effective.ofType(Period)"}
    # ref-1 is answered natively over the references (Validator._native_invariants): no site for it.
    assert "Observation.subject" not in {v.path for v in full.invariants}
    assert lean.invariants == []
    assert [v.path for v in full.references] == [v.path for v in lean.references] == ["Observation.subject"]
    assert full.references[0].resource_path == "Observation"


def _div_issues(div: str) -> list[Issue]:
    sink = IssueSink()
    check_div(div, "Basic.text.div", sink)
    return sink.result()


def test_text_only_narrative_verdicts() -> None:
    ns = '<div xmlns="http://www.w3.org/1999/xhtml">'
    assert _div_issues(f"{ns}some text</div>") == []
    assert _div_issues(f"  {ns}text &gt; and &amp;</div>\n") == []
    empty = _div_issues(f"{ns} \n\t</div>")
    assert [(i.message_id, i.diagnostics[:21]) for i in empty] == [(MsgId.INVARIANT, "Constraint failed: tx")]
    # Not text only: the parser decides, with its own words.
    assert [i.message_id for i in _div_issues(f"{ns}a ]]> b</div>")] == [MsgId.XHTML]
    assert [i.message_id for i in _div_issues(f"{ns}a \x01 b</div>")] == [MsgId.XHTML]
    assert [i.diagnostics for i in _div_issues(f"{ns}<script>x</script></div>")] == [
        "Illegal element name in the narrative XHTML ('script')"]
    assert [i.diagnostics for i in _div_issues(f'{ns}<a href=" JavaScript:x" onclick="y">z</a></div>')] == [
        "Illegal attribute in the narrative XHTML ('a/@href')",
        "Illegal attribute in the narrative XHTML ('a/@onclick')"]


def test_profile_verdict_is_remembered_with_its_path() -> None:
    sd = {"resourceType": "StructureDefinition", "url": "http://example.org/sd/p", "name": "P", "status": "draft",
          "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
          "baseDefinition": "http://example.org/unknown-base",
          "differential": {"element": [{"id": "Patient", "path": "Patient"}]}}
    first = validator().validate(sd)
    assert first == validator().validate(copy.deepcopy(sd))
    unknown = [i for i in first if i.message_id == MsgId.PROFILE_UNKNOWN]
    assert [i.expression for i in unknown] == [("StructureDefinition.baseDefinition",)]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": "http://example.org/sd/p", "resource": sd}]}
    in_bundle = [i for i in validator().validate(bundle) if i.message_id == MsgId.PROFILE_UNKNOWN]
    assert [i.expression for i in in_bundle] == [("Bundle.entry[0].resource.baseDefinition",)]


def _walked_and_described(resource: dict[str, Any]) -> tuple[list[Any], list[Any], bool]:
    """The walk's references, descendants().ofType(Reference) from the definitions, and whether the
    validator would take the first for the second (no error, none in a primitive's extensions)."""
    sink = IssueSink()
    ctx = WalkContext(sink)
    validator().structure.validate_resource(resource, "", ctx)
    walked = [v.node for v in ctx.references]
    described = validator().shapes.descendants_of_type([resource], "Reference")
    return walked, described, not sink.has_errors() and not ctx.companion_references


def test_walked_references_are_the_typed_descendants() -> None:
    # Validator takes the walk's references for descendants().ofType(Reference) of the resource (cx-bdl-1
    # over a whole Bundle) when the walk found no error: the same objects, in the same order, on every
    # resource the tests carry and on nested cases (a Reference inside a Reference's identifier, in
    # contained resources, extensions, a Bundle inside a Bundle).
    from tests.unit.test_fhirpath_differential import corpus

    nested = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {
            "resourceType": "Patient", "id": "p",
            "contained": [{"resourceType": "Organization", "id": "o", "partOf": {"reference": "Organization/x"}}],
            "managingOrganization": {"reference": "#o", "identifier": {"system": "urn:s", "value": "1",
                                                                       "assigner": {"reference": "Organization/a"}}},
            "extension": [{"url": "http://example.org/e", "valueReference": {"reference": "Patient/q"}}],
            "generalPractitioner": [{"reference": "Practitioner/1"}, {"display": "Dr"}]}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Observation", "status": "final",
                                                   "code": {"text": "x"}, "subject": {"reference": "Patient/p"},
                                                   "performer": [{"reference": "Practitioner/1"}]}}]}}]}
    taken = 0
    for resource in [*corpus(), nested]:
        walked, described, usable = _walked_and_described(resource)
        if usable:
            taken += 1
            assert len(walked) == len(described) and all(a is b for a, b in zip(walked, described, strict=True)), \
                (resource.get("resourceType"), resource.get("id"))
    assert taken > 250
    walked, described, usable = _walked_and_described(nested)
    assert usable and len(walked) == 8


def test_references_in_a_primitives_extensions_are_not_taken_for_descendants() -> None:
    # descendants() does not enter a primitive's _name object: a Reference there is the walk's, not
    # descendants()'s, so the validator does not take the walk's list for it.
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "2000-01-01", "_birthDate": {"extension": [
        {"url": "http://example.org/e", "valueReference": {"reference": "Patient/q"}}]},
        "managingOrganization": {"reference": "Organization/o"}}
    walked, described, usable = _walked_and_described(patient)
    assert len(walked) == 2 and len(described) == 1 and not usable


def test_issues_made_without_the_dataclass_init_are_issues() -> None:
    # IssueSink builds its Issues with object.__setattr__ (issues.new_issue): the same value, hash and
    # frozen behaviour as Issue(...), and dataclasses.replace still works on them.
    import dataclasses

    import pytest

    from fhir_exchange.validation.issues import new_issue

    made = new_issue("error", "invalid", "bad", ("Patient.gender",), MsgId.CODE_NOT_IN_VALUESET)
    plain = Issue("error", "invalid", "bad", ("Patient.gender",), MsgId.CODE_NOT_IN_VALUESET)
    assert made == plain and hash(made) == hash(plain) and type(made) is Issue
    assert dataclasses.replace(made, diagnostics="x") == dataclasses.replace(plain, diagnostics="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.severity = "warning"  # type: ignore[misc]
    sink = IssueSink()
    sink.error("invalid", MsgId.CODE_NOT_IN_VALUESET, "bad", "Patient.gender")
    assert sink.result() == [plain]
