"""Profiles (https://hl7.org/fhir/R4/profiling.html): snapshot generation and each profile rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Issue
from fhir_exchange.validation import Validator
from fhir_exchange.validation.schema import compile_structure
from fhir_exchange.validation.snapshot import SnapshotGenerator, UnknownBase
from fhir_exchange.validation.xml import parse_xml_resource

BASE = "http://hl7.org/fhir/StructureDefinition/"
URL = "http://example.org/fhir/StructureDefinition/"
KR_CORE = Path(__file__).resolve().parents[2] / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"


def profile(name: str, type_: str, elements: list[dict[str, Any]], base: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition", "id": name, "url": URL + name, "name": name, "status": "active",
        "kind": "complex-type" if type_ == "Extension" or type_[0].islower() else "resource",
        "abstract": False, "type": type_, "baseDefinition": base or BASE + type_, "derivation": "constraint",
        "differential": {"element": elements},
    }


def validator(*sds: dict[str, Any]) -> Validator:
    defs = Definitions.load()
    for sd in sds:
        defs.add(sd)
    return Validator(defs)


def errors(v: Validator, res: dict[str, Any], url: str) -> list[Issue]:
    return [i for i in v.validate(res, profiles=[URL + url]) if i.severity == "error"]


def ids(issues: list[Issue]) -> list[str | None]:
    return [i.message_id for i in issues]


OBS: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 37.1, "system": "http://unitsofmeasure.org", "code": "Cel", "unit": "C"},
}


def obs(**changes: Any) -> dict[str, Any]:
    o = copy.deepcopy(OBS)
    for k, v in changes.items():
        if v is None:
            o.pop(k, None)
        else:
            o[k] = v
    return o


# -- snapshot generation -----------------------------------------------------------------------

def test_snapshot_overlays_and_expands_datatypes() -> None:
    sd = profile("p-name", "Patient", [{"id": "Patient.name", "path": "Patient.name", "min": 1},
                                       {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1}])
    defs = Definitions.load()
    schema = compile_structure(SnapshotGenerator(defs).with_snapshot(sd))
    name = schema.by_id["Patient.name"]
    assert name.min == 1
    assert schema.by_id["Patient.name.family"].min == 1
    assert schema.by_id["Patient.name.given"].min == 0  # the rest of HumanName came along
    assert schema.by_id["Patient.gender"].binding is not None  # untouched base elements stay


def test_snapshot_slice_copies_backbone_children() -> None:
    sd = profile("p-comp", "Observation", [
        {"id": "Observation.component", "path": "Observation.component",
         "slicing": {"discriminator": [{"type": "pattern", "path": "code"}], "rules": "open"}},
        {"id": "Observation.component:sys", "path": "Observation.component", "sliceName": "sys", "min": 1},
    ])
    schema = compile_structure(SnapshotGenerator(Definitions.load()).with_snapshot(sd))
    sliced = schema.by_id["Observation.component"]
    assert [s.slice_name for s in sliced.slices] == ["sys"]
    assert schema.by_id["Observation.component:sys.code"].min == 1  # inherited from the base backbone


def test_snapshot_choice_rename_narrows_type() -> None:
    sd = profile("p-vq", "Observation", [{"path": "Observation.valueQuantity", "min": 1}])
    schema = compile_structure(SnapshotGenerator(Definitions.load()).with_snapshot(sd))
    value = schema.by_id["Observation.value[x]"]
    assert value.type_codes == ("Quantity",) and value.min == 1


def test_snapshot_records_unmatched_element() -> None:
    sd = profile("p-bad", "Patient", [{"path": "Patient.dateOfBirth", "min": 1}])
    gen = SnapshotGenerator(Definitions.load())
    gen.with_snapshot(sd)
    assert gen.problems[URL + "p-bad"] == ["differential element Patient.dateOfBirth matches nothing in the base"]


def test_snapshot_of_profile_on_profile() -> None:
    a = profile("p-a", "Patient", [{"path": "Patient.birthDate", "min": 1}])
    b = profile("p-b", "Patient", [{"path": "Patient.gender", "min": 1}], base=URL + "p-a")
    v = validator(a, b)
    errs = errors(v, {"resourceType": "Patient", "id": "x"}, "p-b")
    assert sorted(e.diagnostics for e in errs) == [
        "Patient.birthDate: minimum required = 1, but only found 0",
        "Patient.gender: minimum required = 1, but only found 0",
    ]


def test_snapshot_unknown_base() -> None:
    sd = profile("p-orphan", "Patient", [], base=URL + "nowhere")
    with pytest.raises(UnknownBase):
        SnapshotGenerator(Definitions.load()).generate(sd)


@pytest.mark.skipif(not KR_CORE.exists(), reason="KR Core package not present")
def test_every_kr_core_profile_gets_a_snapshot() -> None:
    defs = Definitions.load([KR_CORE])
    gen = SnapshotGenerator(defs)
    sds = [sd for sd in defs.iter("StructureDefinition") if "hl7korea" in sd.get("url", "")
           and sd.get("derivation") == "constraint"]
    assert len(sds) >= 30
    for sd in sds:
        compile_structure(gen.with_snapshot(sd))
    assert gen.problems == {}


@pytest.mark.skipif(not KR_CORE.exists(), reason="KR Core package not present")
def test_kr_core_patient_profile_rules() -> None:
    defs = Definitions.load([KR_CORE])
    v = Validator(defs)
    url = next(sd["url"] for sd in defs.iter("StructureDefinition") if sd["url"].endswith("/krcore-patient"))
    bad = {"resourceType": "Patient", "id": "p", "gender": "male"}
    msgs = [i.diagnostics for i in v.validate(bad, profiles=[url]) if i.severity == "error"]
    assert "Patient.identifier: minimum required = 1, but only found 0" in msgs
    good = {"resourceType": "Patient", "id": "p", "identifier": [{"system": "http://hospital.example/mrn",
                                                                    "value": "123"}],
            "name": [{"text": "홍길동"}], "gender": "male", "birthDate": "1980-01-01"}
    assert [i for i in v.validate(good, profiles=[url]) if i.severity == "error"] == []


def test_xml_profile_is_converted_with_shapes() -> None:
    xml = """<StructureDefinition xmlns="http://hl7.org/fhir">
      <url value="http://example.org/fhir/StructureDefinition/p-xml"/><name value="PXml"/><status value="draft"/>
      <kind value="resource"/><abstract value="false"/><type value="Patient"/>
      <baseDefinition value="http://hl7.org/fhir/StructureDefinition/Patient"/><derivation value="constraint"/>
      <differential><element><path value="Patient.identifier"/><min value="1"/>
        <fixedIdentifier><use value="usual"/></fixedIdentifier></element></differential>
    </StructureDefinition>"""
    v = validator()
    sd = parse_xml_resource(xml, v.shapes)
    assert sd["differential"]["element"] == [
        {"path": "Patient.identifier", "min": 1, "fixedIdentifier": {"use": "usual"}}]
    assert sd["abstract"] is False  # a JSON boolean, from the shape
    v.definitions.add(sd)
    assert ids(errors(v, {"resourceType": "Patient", "identifier": [{"use": "official"}]}, "p-xml")) == [
        "sd-fixed-mismatch"]


# -- profile rules -----------------------------------------------------------------------------

def test_profile_min_cardinality() -> None:
    v = validator(profile("p1", "Observation", [{"path": "Observation.effective[x]", "min": 1}]))
    assert ids(errors(v, obs(), "p1")) == ["sd-cardinality-min"]
    assert errors(v, obs(effectiveDateTime="2020-01-01"), "p1") == []


def test_profile_max_cardinality_zero() -> None:
    v = validator(profile("p2", "Observation", [{"path": "Observation.note", "max": "0"}]))
    issue = errors(v, obs(note=[{"text": "x"}]), "p2")
    assert ids(issue) == ["sd-cardinality-max"] and issue[0].expression == ("Observation.note",)


def test_profile_type_narrowing() -> None:
    v = validator(profile("p3", "Observation", [{"path": "Observation.value[x]", "type": [{"code": "string"}]}]))
    assert ids(errors(v, obs(), "p3")) == ["sd-type-not-allowed"]
    assert errors(v, obs(valueQuantity=None, valueString="x"), "p3") == []


def test_profile_fixed_value() -> None:
    v = validator(profile("p4", "Observation", [{"path": "Observation.status", "fixedCode": "final"}]))
    assert errors(v, obs(), "p4") == []
    issue = errors(v, obs(status="amended"), "p4")
    assert ids(issue) == ["sd-fixed-mismatch"] and issue[0].expression == ("Observation.status",)


def test_profile_fixed_complex_is_exact() -> None:
    fixed = {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}
    v = validator(profile("p5", "Observation", [{"path": "Observation.code", "fixedCodeableConcept": fixed}]))
    assert errors(v, obs(), "p5") == []
    extra = obs(code={"coding": [{"system": "http://loinc.org", "code": "2339-0"}], "text": "Glucose"})
    assert ids(errors(v, extra, "p5")) == ["sd-fixed-mismatch"]


def test_profile_pattern_allows_more() -> None:
    pattern = {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}
    v = validator(profile("p6", "Observation", [{"path": "Observation.code", "patternCodeableConcept": pattern}]))
    more = obs(code={"coding": [{"system": "http://snomed.info/sct", "code": "1"},
                                {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]})
    assert errors(v, more, "p6") == []
    other = obs(code={"coding": [{"system": "http://loinc.org", "code": "2345-7"}]})
    assert ids(errors(v, other, "p6")) == ["sd-pattern-mismatch"]


def test_profile_min_max_value_quantity_with_units() -> None:
    v = validator(profile("p7", "Observation", [
        {"path": "Observation.valueQuantity",
         "minValueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "kg"},
         "maxValueQuantity": {"value": 2, "system": "http://unitsofmeasure.org", "code": "kg"}}]))
    q = {"system": "http://unitsofmeasure.org", "code": "g"}
    assert errors(v, obs(valueQuantity={"value": 1500, **q}), "p7") == []
    assert ids(errors(v, obs(valueQuantity={"value": 500, **q}), "p7")) == ["sd-min-value"]
    assert ids(errors(v, obs(valueQuantity={"value": 2500, **q}), "p7")) == ["sd-max-value"]


def test_profile_min_value_date_and_max_length() -> None:
    v = validator(profile("p8", "Patient", [
        {"path": "Patient.birthDate", "minValueDate": "1900-01-01"},
        {"path": "Patient.name.family", "maxLength": 5}]))
    assert ids(errors(v, {"resourceType": "Patient", "birthDate": "1899-12-31"}, "p8")) == ["sd-min-value"]
    assert ids(errors(v, {"resourceType": "Patient", "name": [{"family": "Kimberly"}]}, "p8")) == [
        "sd-max-length"]


def test_profile_required_binding() -> None:
    v = validator(profile("p9", "Observation", [
        {"path": "Observation.status",
         "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/publication-status"}}]))
    assert ids(errors(v, obs(), "p9")) == ["tx-code-not-in-valueset"]  # 'final' is not draft|active|retired


def test_profile_extensible_binding_is_warning() -> None:
    v = validator(profile("p10", "Observation", [
        {"path": "Observation.category",
         "binding": {"strength": "extensible",
                     "valueSet": "http://hl7.org/fhir/ValueSet/observation-category"}}]))
    res = obs(category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "not-a-category"}]}])
    issues = v.validate(res, profiles=[URL + "p10"])
    assert [(i.severity, i.message_id) for i in issues if i.message_id and i.message_id.startswith("tx-")] == [
        ("warning", "tx-code-not-in-valueset-extensible")]


def test_profile_invariant_error_and_warning() -> None:
    v = validator(profile("p11", "Observation", [
        {"path": "Observation", "constraint": [
            {"key": "p11-1", "severity": "error", "human": "needs an effective time",
             "expression": "effective.exists()"},
            {"key": "p11-2", "severity": "warning", "human": "should have a note", "expression": "note.exists()"}]}]))
    issues = [(i.severity, i.diagnostics) for i in v.validate(obs(), profiles=[URL + "p11"])
              if i.message_id == "sd-invariant"]
    assert issues == [("error", "Constraint failed: p11-1: needs an effective time"),
                      ("warning", "Constraint failed: p11-2: should have a note")]


SLICED_CATEGORY = [
    {"path": "Observation.category", "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}],
                                                  "rules": "closed"}},
    {"path": "Observation.category", "sliceName": "vs", "min": 1, "max": "1",
     "patternCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                            "code": "vital-signs"}]}},
]
VS_CAT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
LAB_CAT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}


def test_slicing_pattern_discriminator_and_slice_min() -> None:
    v = validator(profile("s1", "Observation", SLICED_CATEGORY))
    assert errors(v, obs(category=[VS_CAT]), "s1") == []
    issue = errors(v, obs(), "s1")
    assert [i.diagnostics for i in issue] == ["Observation.category:vs: minimum required = 1, but only found 0"]


def test_slicing_closed_rejects_unmatched() -> None:
    v = validator(profile("s2", "Observation", SLICED_CATEGORY))
    issue = errors(v, obs(category=[VS_CAT, LAB_CAT]), "s2")
    assert ids(issue) == ["sd-slicing-closed"] and issue[0].expression == ("Observation.category[1]",)


def test_slicing_open_at_end() -> None:
    elements = copy.deepcopy(SLICED_CATEGORY)
    elements[0]["slicing"]["rules"] = "openAtEnd"
    v = validator(profile("s3", "Observation", elements))
    assert errors(v, obs(category=[VS_CAT, LAB_CAT]), "s3") == []
    assert ids(errors(v, obs(category=[LAB_CAT, VS_CAT]), "s3")) == ["sd-slicing-order"]


def test_slicing_ordered() -> None:
    v = validator(profile("s4", "Observation", [
        {"path": "Observation.component", "slicing": {"discriminator": [{"type": "value", "path": "code.text"}],
                                                      "ordered": True, "rules": "open"}},
        {"path": "Observation.component", "sliceName": "a"},
        {"path": "Observation.component.code.text", "fixedString": "a"},
        {"path": "Observation.component", "sliceName": "b"},
        {"path": "Observation.component.code.text", "fixedString": "b"},
    ]))
    a = {"code": {"text": "a"}, "valueString": "1"}
    b = {"code": {"text": "b"}, "valueString": "2"}
    assert errors(v, obs(component=[a, b]), "s4") == []
    assert ids(errors(v, obs(component=[b, a]), "s4")) == ["sd-slicing-order"]


def test_slicing_value_discriminator_checks_slice_rules() -> None:
    v = validator(profile("s5", "Patient", [
        {"path": "Patient.identifier", "slicing": {"discriminator": [{"type": "value", "path": "system"}],
                                                   "rules": "open"}},
        {"path": "Patient.identifier", "sliceName": "mrn", "min": 1, "max": "1"},
        {"path": "Patient.identifier.system", "fixedUri": "http://hospital.example/mrn"},
        {"path": "Patient.identifier.value", "min": 1},
    ]))
    mrn = {"system": "http://hospital.example/mrn", "value": "1"}
    other = {"system": "http://other.example", "value": "2"}
    assert errors(v, {"resourceType": "Patient", "identifier": [other, mrn]}, "s5") == []
    issue = errors(v, {"resourceType": "Patient", "identifier": [{"system": "http://hospital.example/mrn"}]}, "s5")
    assert [i.diagnostics for i in issue] == ["Patient.identifier.value: minimum required = 1, but only found 0"]
    assert ids(errors(v, {"resourceType": "Patient", "identifier": [mrn, mrn]}, "s5")) == ["sd-cardinality-max"]


def test_slicing_exists_discriminator() -> None:
    v = validator(profile("s6", "Observation", [
        {"path": "Observation.component", "slicing": {"discriminator": [{"type": "exists", "path": "interpretation"}],
                                                      "rules": "open"}},
        {"path": "Observation.component", "sliceName": "interpreted", "min": 1},
        {"path": "Observation.component.interpretation", "min": 1},
        {"path": "Observation.component.valueString", "min": 1},
    ]))
    plain = {"code": {"text": "a"}, "valueQuantity": {"value": 1}}
    interpreted = {"code": {"text": "b"}, "interpretation": [{"text": "high"}], "valueString": "x"}
    assert errors(v, obs(component=[plain, interpreted]), "s6") == []
    assert [i.diagnostics for i in errors(v, obs(component=[plain]), "s6")] == [
        "Observation.component:interpreted: minimum required = 1, but only found 0"]


def test_slicing_type_discriminator_on_bundle_entries() -> None:
    v = validator(profile("s7", "Bundle", [
        {"path": "Bundle.entry", "slicing": {"discriminator": [{"type": "type", "path": "resource"}],
                                             "rules": "closed"}},
        {"path": "Bundle.entry", "sliceName": "patient", "min": 1, "max": "1"},
        {"path": "Bundle.entry.resource", "type": [{"code": "Patient"}]},
    ]))
    pat = {"fullUrl": "urn:uuid:7b1d0c1e-5e36-4a6b-9d33-1f7f4c1d0a01", "resource": {"resourceType": "Patient"}}
    org = {"fullUrl": "urn:uuid:7b1d0c1e-5e36-4a6b-9d33-1f7f4c1d0a02",
           "resource": {"resourceType": "Organization", "name": "x"}}
    assert errors(v, {"resourceType": "Bundle", "type": "collection", "entry": [pat]}, "s7") == []
    assert ids(errors(v, {"resourceType": "Bundle", "type": "collection", "entry": [pat, org]}, "s7")) == [
        "sd-slicing-closed"]


def test_slicing_profile_discriminator() -> None:
    named = profile("named-patient", "Patient", [{"path": "Patient.name", "min": 1}])
    v = validator(named, profile("s8", "Bundle", [
        {"path": "Bundle.entry", "slicing": {"discriminator": [{"type": "profile", "path": "resource"}],
                                             "rules": "open"}},
        {"path": "Bundle.entry", "sliceName": "named", "min": 1},
        {"path": "Bundle.entry.resource", "type": [{"code": "Patient", "profile": [URL + "named-patient"]}]},
    ]))
    def bundle(*patients: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": f"urn:uuid:7b1d0c1e-5e36-4a6b-9d33-1f7f4c1d0b0{i}", "resource": p}
            for i, p in enumerate(patients)]}
    anonymous = {"resourceType": "Patient", "gender": "male"}
    with_name = {"resourceType": "Patient", "name": [{"text": "A"}]}
    assert errors(v, bundle(anonymous, with_name), "s8") == []
    assert [i.diagnostics for i in errors(v, bundle(anonymous), "s8")] == [
        "Bundle.entry:named: minimum required = 1, but only found 0"]


def test_extension_slice_by_url_requires_extension() -> None:
    v = validator(profile("s9", "Patient", [
        {"path": "Patient.extension", "slicing": {"discriminator": [{"type": "value", "path": "url"}],
                                                  "rules": "open"}},
        {"path": "Patient.extension", "sliceName": "birthPlace", "min": 1,
         "type": [{"code": "Extension", "profile": [BASE + "patient-birthPlace"]}]},
    ]))
    place = {"url": BASE + "patient-birthPlace", "valueAddress": {"city": "Seoul"}}
    assert errors(v, {"resourceType": "Patient", "extension": [place]}, "s9") == []
    assert [i.diagnostics for i in errors(v, {"resourceType": "Patient"}, "s9")] == [
        "Patient.extension:birthPlace: minimum required = 1, but only found 0"]


def test_target_profile_of_contained_reference() -> None:
    named = profile("named-org", "Organization", [{"path": "Organization.name", "min": 1}])
    v = validator(named, profile("t1", "Patient", [
        {"path": "Patient.managingOrganization", "type": [{"code": "Reference",
                                                           "targetProfile": [URL + "named-org"]}]}]))
    def pat(org: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Patient", "contained": [org], "managingOrganization": {"reference": "#o"}}
    assert errors(v, pat({"resourceType": "Organization", "id": "o", "name": "A"}), "t1") == []
    nameless = pat({"resourceType": "Organization", "id": "o", "identifier": [{"value": "1"}]})
    assert ids(errors(v, nameless, "t1")) == ["ref-target-type"]


def test_meta_profile_is_validated_and_unknown_one_warned() -> None:
    v = validator(profile("m1", "Observation", [{"path": "Observation.effective[x]", "min": 1}]))
    declared = obs(meta={"profile": [URL + "m1"]})
    assert ids([i for i in v.validate(declared) if i.severity == "error"]) == ["sd-cardinality-min"]
    unknown = obs(meta={"profile": [URL + "not-loaded"]})
    assert [(i.severity, i.message_id) for i in v.validate(unknown)] == [("warning", "sd-profile-unknown")]


def test_profile_for_another_type_is_an_error() -> None:
    v = validator(profile("m2", "Patient", []))
    assert ids(errors(v, obs(), "m2")) == ["sd-profile-unusable"]


def test_structure_definition_contradicting_its_base_is_invalid() -> None:
    base = profile("ext-b", "Extension", [{"path": "Extension.url", "fixedUri": URL + "ext-b"},
                                           {"path": "Extension.value[x]", "type": [{"code": "string"}]}])
    derived = profile("ext-d", "Extension", [{"path": "Extension.url", "fixedUri": URL + "ext-d"}],
                      base=URL + "ext-b")
    derived["context"] = [{"type": "element", "expression": "Element"}]
    v = validator(base)
    issues = [i for i in v.validate(derived) if i.message_id == "sd-profile-unusable"]
    assert [i.severity for i in issues] == ["error"] and "contradicts the base's fixed value" in issues[0].diagnostics
    derived["differential"]["element"][0]["fixedUri"] = URL + "ext-b"
    assert [i for i in v.validate(derived) if i.message_id == "sd-profile-unusable"] == []


def test_definitions_added_later_are_used_at_once() -> None:
    v = validator()
    res = {"resourceType": "Patient", "id": "x"}
    assert "sd-profile-unknown" in [i.message_id for i in v.validate(res, profiles=[URL + "late"])]
    v.definitions.add(profile("late", "Patient", [{"path": "Patient.gender", "min": 1}]))
    assert ids(errors(v, res, "late")) == ["sd-cardinality-min"]
    v.definitions.add(profile("late", "Patient", [{"path": "Patient.birthDate", "min": 1}]))  # replaced
    assert [i.diagnostics for i in errors(v, res, "late")] == [
        "Patient.birthDate: minimum required = 1, but only found 0"]
