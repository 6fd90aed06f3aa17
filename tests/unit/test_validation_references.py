"""References, contained resources, Bundles, narrative and Attachment rules:
https://hl7.org/fhir/R4/references.html, domainresource.html, bundle.html, narrative.html, datatypes.html."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator

TEXT = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def found(res: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(i.severity, i.message_id, i.expression[0] if i.expression else "")
            for i in validator().validate(res) if i.severity != "information"]


def obs(**kw: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "text": TEXT, "status": "final", "code": {"text": "x"}, **kw}


def test_reference_target_type_from_literal() -> None:
    assert found(obs(subject={"reference": "Patient/1"})) == []
    assert found(obs(subject={"reference": "Medication/1"})) == [
        ("error", "ref-target-type", "Observation.subject")]
    assert found(obs(subject={"reference": "http://other.example/fhir/Medication/1/_history/2"})) == [
        ("error", "ref-target-type", "Observation.subject")]


def test_reference_type_element_must_agree() -> None:
    assert found(obs(subject={"reference": "Patient/1", "type": "Group"})) == [
        ("error", "ref-target-type", "Observation.subject")]


def test_contained_reference_must_resolve() -> None:
    res = obs(subject={"reference": "#p"})
    assert ("error", "ref-contained-unresolved", "Observation.subject") in found(res)


def test_contained_reference_target_type() -> None:
    res = obs(contained=[{"resourceType": "Medication", "id": "m"}], subject={"reference": "#m"})
    assert found(res) == [("error", "ref-target-type", "Observation.subject")]


def test_dom3_unreferenced_contained() -> None:
    res = obs(contained=[{"resourceType": "Patient", "id": "p"}])
    assert found(res) == [("error", "contained-not-referenced", "Observation.contained[0]")]


def test_dom3_reference_back_to_container_is_enough() -> None:
    prov = {"resourceType": "Provenance", "id": "prov", "target": [{"reference": "#"}],
            "recorded": "2020-01-01T00:00:00Z", "agent": [{"who": {"display": "a"}}]}
    assert found(obs(contained=[prov])) == []


def test_dom3_chain_through_contained() -> None:
    res = obs(contained=[{"resourceType": "Patient", "id": "p", "managingOrganization": {"reference": "#o"}},
                         {"resourceType": "Organization", "id": "o", "name": "x"}],
              subject={"reference": "#p"})
    assert found(res) == []


def test_dom2_dom4_dom5() -> None:
    nested = {"resourceType": "Patient", "id": "p",
              "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}],
              "meta": {"versionId": "1", "security": [{"code": "R"}]}}
    res = obs(contained=[nested], subject={"reference": "#p"})
    assert {d for _, d, _ in found(res) if d} >= {"sd-invariant"}
    msgs = [i.diagnostics[:26] for i in validator().validate(res) if i.expression == ("Observation.contained[0]",)]
    assert {"Constraint failed: dom-2: ", "Constraint failed: dom-4: ", "Constraint failed: dom-5: "} <= set(msgs)


def test_dom6_narrative_is_a_warning() -> None:
    res = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert found(res) == [("warning", "sd-invariant", "Observation")]


def test_narrative_must_be_safe_xhtml() -> None:
    script = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a<script>x()</script></div>'}
    assert found(obs(text=script)) == [("error", "xhtml-content", "Observation.text.div")]
    handler = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">a</p></div>'}
    assert found(obs(text=handler)) == [("error", "xhtml-content", "Observation.text.div")]


def test_narrative_must_be_well_formed_xhtml_div() -> None:
    entity = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">&nbsp;</div>'}
    assert found(obs(text=entity)) == [("error", "xhtml-content", "Observation.text.div")]
    no_ns = {"status": "generated", "div": "<div>a</div>"}
    assert found(obs(text=no_ns)) == [("error", "xhtml-content", "Observation.text.div")]
    bomb = {"status": "generated", "div": '<!DOCTYPE d [<!ENTITY a "aaaa">]><div xmlns="http://www.w3.org/1999/xhtml">&a;</div>'}
    assert found(obs(text=bomb)) == [("error", "xhtml-content", "Observation.text.div")]
    empty = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"> </div>'}
    assert found(obs(text=empty)) == [("error", "sd-invariant", "Observation.text.div")]


def test_attachment_size_and_hash() -> None:
    att = {"contentType": "text/plain", "data": "aGVsbG8=", "size": 5, "hash": "qvTGHdzF6KLavt4PO0gs2a6pQ00="}
    ref = {"resourceType": "DocumentReference", "text": TEXT, "status": "current", "content": [{"attachment": att}]}
    assert found(ref) == []
    att["size"], att["hash"] = 6, "AAAA"
    assert found(ref) == [("error", "attachment-hash", "DocumentReference.content[0].attachment.hash"),
                          ("error", "attachment-size", "DocumentReference.content[0].attachment.size")]


def entry(full: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full, "resource": res}


PAT = {"resourceType": "Patient", "id": "p", "text": TEXT}


def test_bundle_fullurl_unique_unless_versions_differ() -> None:
    b = {"resourceType": "Bundle", "type": "collection", "entry": [
        entry("http://a.example/fhir/Patient/p", PAT), entry("http://a.example/fhir/Patient/p", PAT)]}
    assert ("error", "bundle-duplicate-fullurl", "Bundle.entry[1]") in found(b)
    v1 = {**PAT, "meta": {"versionId": "1"}}
    v2 = {**PAT, "meta": {"versionId": "2"}}
    b["entry"] = [entry("http://a.example/fhir/Patient/p", v1), entry("http://a.example/fhir/Patient/p", v2)]
    assert found(b) == []


def test_bundle_fullurl_absolute_and_matching_id() -> None:
    b = {"resourceType": "Bundle", "type": "collection", "entry": [entry("Patient/p", PAT)]}
    assert found(b) == [("error", "bundle-duplicate-fullurl", "Bundle.entry[0].fullUrl")]
    b["entry"] = [entry("http://a.example/fhir/Patient/q", PAT)]
    assert found(b) == [("error", "bundle-duplicate-fullurl", "Bundle.entry[0].fullUrl")]


def test_document_bundle_references_resolve_inside() -> None:
    comp = {"resourceType": "Composition", "id": "c", "text": TEXT, "status": "final", "type": {"text": "note"},
            "date": "2020-01-01", "title": "t", "author": [{"reference": "Patient/p"}],
            "subject": {"reference": "Patient/p"}}
    ident = {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3d5a2e-1b4f-4c6d-8e9f-a0b1c2d3e4f5"}
    doc = {"resourceType": "Bundle", "type": "document", "identifier": ident,
           "timestamp": "2020-01-01T00:00:00Z",
           "entry": [entry("http://a.example/fhir/Composition/c", comp), entry("http://a.example/fhir/Patient/p", PAT)]}
    assert [f for f in found(doc) if f[1] != "sd-invariant"] == []
    comp["author"] = [{"reference": "Practitioner/x"}]
    assert ("error", "ref-contained-unresolved", "Bundle.entry[0].resource.author[0]") in found(doc)


def test_bundle_entries_are_validated_with_their_own_path() -> None:
    b = {"resourceType": "Bundle", "type": "collection", "entry": [
        entry("http://a.example/fhir/Observation/o", obs(id="o", subject={"reference": "Medication/1"}))]}
    assert found(b) == [("error", "ref-target-type", "Bundle.entry[0].resource.subject")]
