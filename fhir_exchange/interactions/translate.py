"""ConceptMap/$translate: https://hl7.org/fhir/R4/conceptmap-operation-translate.html

``ConceptMap/[id]/$translate``, ``?url=`` (+``conceptMapVersion``), a ``conceptMap`` resource, or no map
at all: then every loaded ConceptMap whose ``source``/``target`` fit the ``source``/``target``
parameters is used. The concept comes as ``code``+``system`` (+``version``), ``coding`` or
``codeableConcept``; ``targetsystem`` keeps only groups with that target system; ``reverse=true``
maps from targets back to sources (equivalences wider/narrower and subsumes/specializes swap).
An element with no match in a group that declares ``unmapped`` gets ``provided`` (the same code, as
``equal``) or ``fixed`` (the given code, as ``inexact``); ``other-map`` is not followed.

The answer: ``result`` (true when a match is not ``unmatched``/``disjoint``), ``message`` when false, and
a ``match`` per mapping with ``equivalence``, ``concept`` and ``source`` (the ConceptMap's url).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.interactions.parameters import OperationParameters, one_of, operand
from fhir_exchange.interactions.repository import Repository
from fhir_exchange.interactions.request import FhirRequest, FhirResponse
from fhir_exchange.validation.picklist import service

_REVERSED = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes", "specializes": "subsumes"}
_NEGATIVE = frozenset({"unmatched", "disjoint"})


def _codings(p: OperationParameters) -> list[dict[str, Any]]:
    one_of(p, "translate", "code", "coding", "codeableConcept")
    if p.has("code"):
        code = p.string("code")
        if code is None:
            raise invalid("$translate: the code is empty", "code")
        return [{"system": p.string("system"), "code": code}]
    coding = p.coding("coding")
    if coding is not None:
        return [coding]
    codings = p.codings("codeableConcept")
    if codings is None:
        raise invalid("$translate needs a concept: 'code' (with 'system'), 'coding' or 'codeableConcept'", "code")
    return codings


def _scope(cm: dict[str, Any], end: str) -> str | None:
    value = cm.get(f"{end}Uri", cm.get(f"{end}Canonical"))
    return value if isinstance(value, str) else None


def _translate_one(cm: dict[str, Any], system: str | None, code: str, target_system: str | None,
                   reverse: bool) -> list[dict[str, Any]]:
    matches: list[dict[str, Any]] = []
    url = cm.get("url") or f"ConceptMap/{cm.get('id')}"
    for group in cm.get("group", []) or []:
        src, tgt = group.get("source"), group.get("target")
        if reverse:
            src, tgt = tgt, src
        if system is not None and src != system:
            continue
        if target_system is not None and tgt != target_system:
            continue
        found = False
        for element in group.get("element", []) or []:
            for t in element.get("target", []) or []:
                equivalence = t.get("equivalence", "equivalent")
                if reverse:
                    if t.get("code") != code:
                        continue
                    concept = {"system": tgt, "code": element.get("code"), "display": element.get("display")}
                    equivalence = _REVERSED.get(equivalence, equivalence)
                else:
                    if element.get("code") != code:
                        continue
                    concept = {"system": tgt, "code": t.get("code"), "display": t.get("display")}
                found = True
                match: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": equivalence}]
                concept = {k: v for k, v in concept.items() if v}
                if concept.get("code"):
                    version = group.get("sourceVersion" if reverse else "targetVersion")
                    if version:
                        concept["version"] = version
                    match.append({"name": "concept", "valueCoding": concept})
                match.append({"name": "source", "valueUri": url})
                matches.append({"name": "match", "part": match})
        unmapped = group.get("unmapped") or {}
        if not found and not reverse and unmapped.get("mode") in ("provided", "fixed"):
            fixed = unmapped.get("mode") == "fixed"
            concept = {"system": tgt, "code": unmapped.get("code") if fixed else code}
            if fixed and unmapped.get("display"):
                concept["display"] = unmapped["display"]
            if concept.get("code"):
                matches.append({"name": "match", "part": [
                    {"name": "equivalence", "valueCode": "inexact" if fixed else "equal"},
                    {"name": "concept", "valueCoding": {k: v for k, v in concept.items() if v}},
                    {"name": "source", "valueUri": url}]})
    return matches


async def translate(repo: Repository, req: FhirRequest, type: str | None, id: str | None) -> FhirResponse:
    p = OperationParameters(req, "translate")
    cm, _cacheable = operand(repo, p, "ConceptMap", id, "conceptMap", "url", "conceptMapVersion")
    codings = _codings(p)
    source, target = p.string("source"), p.string("target")
    target_system = p.string("targetsystem")
    reverse = p.boolean("reverse")
    if cm is not None:
        maps = [cm]
    else:
        if reverse:
            source, target = target, source
        maps = [m for m in service(repo.svc.definitions).concept_maps()
                if (source is None or _scope(m, "source") == source)
                and (target is None or _scope(m, "target") == target)]
    matches: list[dict[str, Any]] = []
    for coding in codings:
        for m in maps:
            for match in _translate_one(m, coding.get("system"), str(coding["code"]), target_system, reverse):
                if match not in matches:
                    matches.append(match)
    result = any(part["valueCode"] not in _NEGATIVE for m in matches for part in m["part"]
                 if part["name"] == "equivalence")
    out: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
    if not result:
        label = ", ".join(f"{c.get('system')}#{c['code']}" if c.get("system") else str(c["code"]) for c in codings)
        where = cm.get("url") if cm is not None else f"the {len(maps)} ConceptMaps that apply"
        out.append({"name": "message", "valueString": f"No mapping found for {label} in {where}"})
    out += matches
    return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": out})
