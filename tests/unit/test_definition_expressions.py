"""The write check of SearchParameter and StructureDefinition expressions (definitions/expressions.py):
no false refusal of any definition the server ships (R4 core, KR Core, the consult IG), and the
refusals it exists for. Over HTTP: tests/api/test_conformance_expressions.py."""

from __future__ import annotations

from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.definitions.expressions import search_parameter_issues, structure_definition_issues


def _by_publisher(items: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        prefix = item["url"].split("/StructureDefinition/")[0].split("/SearchParameter/")[0]
        out[prefix] = out.get(prefix, 0) + 1
    return out


def test_every_loaded_search_parameter_passes(definitions: Definitions) -> None:
    params = list(definitions.iter("SearchParameter"))
    counts = _by_publisher(params)
    # The three sources are really there: the core, KR Core and the consult IG (profiles/).
    assert counts["http://hl7.org/fhir"] > 1300
    assert counts["http://www.hl7korea.or.kr/fhir/krcore"] > 10
    assert counts["http://fhir-exchange.org/fhir"] >= 4
    failures = [f"{sp['url']}: {i.diagnostics}" for sp in params for i in search_parameter_issues(sp)]
    assert not failures, "\n".join(failures)


def test_every_loaded_structure_definition_passes(definitions: Definitions) -> None:
    structures = list(definitions.iter("StructureDefinition"))
    counts = _by_publisher(structures)
    assert counts["http://hl7.org/fhir"] > 600
    assert counts["http://www.hl7korea.or.kr/fhir/krcore"] > 10
    assert counts["http://fhir-exchange.org/fhir"] >= 10
    failures = [f"{sd['url']} {i.expression}: {i.diagnostics}" for sd in structures
                for i in structure_definition_issues(sd)]
    assert not failures, "\n".join(failures)


def _sp(expression: str, *base: str) -> dict[str, Any]:
    return {"resourceType": "SearchParameter", "base": list(base), "expression": expression}


def test_search_parameter_refusals() -> None:
    (issue,) = search_parameter_issues(_sp("Patient.name.where(", "Patient"))
    assert issue.expression == ("SearchParameter.expression",) and "does not parse" in issue.diagnostics
    (issue,) = search_parameter_issues(_sp("Patient.name.famly", "Patient"))
    assert "famly" in issue.diagnostics and issue.severity == "error"
    (issue,) = search_parameter_issues(_sp("Patient.name.given | Practitioner.name.givn", "Patient", "Practitioner"))
    assert "Practitioner" in issue.diagnostics and "givn" in issue.diagnostics
    assert search_parameter_issues(_sp("Observation.valueQuantity", "Observation"))
    # Accepted: several roots over several bases, extensions, no expression at all (special parameters).
    assert not search_parameter_issues(_sp("Patient.name | Practitioner.name", "Patient", "Practitioner"))
    assert not search_parameter_issues(_sp("Patient.extension('http://x').value", "Patient"))
    assert not search_parameter_issues({"resourceType": "SearchParameter", "base": ["Patient"]})
    assert not search_parameter_issues(_sp("name.given", "SomeLogicalModel"))


def _sd(expression: str, path: str, **extra: Any) -> dict[str, Any]:
    element = {"path": path, "constraint": [{"key": "t-1", "expression": expression}]}
    return {"resourceType": "StructureDefinition", "url": "http://x/sd", "type": path.split(".")[0],
            "kind": "resource", "differential": {"element": [{"path": path.split(".")[0]}, element]}} | extra


def test_structure_definition_refusals() -> None:
    (issue,) = structure_definition_issues(_sd("family.exists() and", "Patient.name"))
    assert issue.expression == ("StructureDefinition.differential.element[1].constraint[0].expression",)
    assert "t-1" in issue.diagnostics and "does not parse" in issue.diagnostics
    (issue,) = structure_definition_issues(_sd("famly.exists()", "Patient.name"))
    assert "famly" in issue.diagnostics
    # The same expression in the snapshot is reported at the snapshot's location.
    sd = _sd("famly.exists()", "Patient.name")
    sd["snapshot"] = sd.pop("differential")
    (issue,) = structure_definition_issues(sd)
    assert issue.expression[0].startswith("StructureDefinition.snapshot.element[1]")


def test_where_the_context_cannot_be_typed_only_parsing_counts() -> None:
    # An Extension's constraints name sub-extensions as elements; logical models have their own paths.
    assert not structure_definition_issues(_sd("nickname.exists()", "Extension", type="Extension"))
    assert structure_definition_issues(_sd("nickname.exists() or", "Extension", type="Extension"))
    assert not structure_definition_issues(_sd("anything.goes", "MyModel.part", kind="logical"))
    assert structure_definition_issues(_sd("anything.goes(", "MyModel.part", kind="logical"))
    # A constraint inherited from another definition is judged there.
    sd = _sd("famly.exists()", "Patient.name")
    sd["differential"]["element"][1]["constraint"][0]["source"] = "http://hl7.org/fhir/StructureDefinition/Patient"
    assert not structure_definition_issues(sd)
