"""Minimal valid instances of any R4 resource type, derived from the core StructureDefinitions.

Every element with ``min >= 1`` (recursively) gets the simplest value of its type; codes with a
required binding take the first code of the bound ValueSet; an element that must have children
(ele-1) but has no mandatory ones gets its first simple child.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.definitions import Definitions

PRIMITIVES: dict[str, Any] = {
    "string": "x", "markdown": "x", "uri": "http://example.org/x", "url": "http://example.org/x",
    "canonical": "http://example.org/x", "boolean": True, "dateTime": "2024-01-01T00:00:00Z",
    "date": "2024-01-01", "instant": "2024-01-01T00:00:00.000Z", "time": "10:00:00", "integer": 1,
    "positiveInt": 1, "unsignedInt": 0, "decimal": 1.5, "id": "x1", "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "base64Binary": "AAAA", "code": "x",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
}
COMPLEX: dict[str, Any] = {
    "Reference": {"display": "x"}, "CodeableConcept": {"text": "x"}, "Identifier": {"value": "x"},
    "Quantity": {"value": 1}, "Money": {"value": 1}, "Period": {"start": "2024-01-01"},
    "Attachment": {"title": "x"}, "Coding": {"system": "http://example.org", "code": "x"},
    "HumanName": {"text": "x"}, "Address": {"text": "x"}, "ContactPoint": {"value": "x"},
    "Annotation": {"text": "x"}, "Range": {"low": {"value": 1}}, "Ratio": {"numerator": {"value": 1}},
    "Duration": {"value": 1}, "Age": {"value": 1}, "SimpleQuantity": {"value": 1}, "Timing": {"event": ["2024-01-01"]},
    "Expression": {"language": "text/cql", "expression": "x"}, "Narrative": None,
}
# Never chosen to give an element content (ele-1): they carry no content of their own.
SKIP = frozenset({"id", "extension", "modifierExtension", "meta", "implicitRules", "language", "text",
                  "contained"})
# First codes that need a particular context are replaced by simpler ones of the same ValueSet.
CODE_OVERRIDES: dict[tuple[str, str], str] = {
    ("Bundle", "type"): "collection",
    ("Binary", "contentType"): "text/plain",
}


# Types whose invariants (FHIRPath constraints) the mandatory elements alone cannot satisfy: these
# top-level elements are set on top of the derived minimum.
INVARIANT_FIXES: dict[str, dict[str, Any]] = {
    "AllergyIntolerance": {"clinicalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}},
    "Appointment": {"participant": [{"status": "accepted", "actor": {"display": "x"}}]},
    "AppointmentResponse": {"actor": {"display": "x"}},
    "CapabilityStatement": {"fhirVersion": "4.0.1", "format": ["json"], "implementation": {"description": "x"},
                            "rest": [{"mode": "server"}]},
    "Consent": {"policyRule": {"text": "x"}},
    "EventDefinition": {"trigger": [{"type": "named-event", "name": "x"}]},
    "ImmunizationRecommendation": {"recommendation": [{"forecastStatus": {"text": "x"},
                                                       "vaccineCode": [{"text": "x"}]}]},
    "Linkage": {"item": [{"type": "source", "resource": {"display": "x"}},
                         {"type": "alternate", "resource": {"display": "y"}}]},
    "Parameters": {"parameter": [{"name": "x", "valueString": "x"}]},
    "StructureDefinition": {"kind": "logical", "type": "http://example.org/x",
                            "differential": {"element": [{"id": "x", "path": "x"}]}},
    "TerminologyCapabilities": {"implementation": {"description": "x"}},
}
# Types the server holds to more than their invariants (fhir_exchange/notify/guard.py: a rest-hook channel
# needs an endpoint the server may call, a websocket channel none; criteria are a search URL).
INVARIANT_FIXES["Subscription"] = {"criteria": "Patient?gender=other", "channel": {"type": "websocket"}}


class MinimalFactory:
    def __init__(self, defs: Definitions) -> None:
        self.defs = defs

    def make(self, type: str) -> dict[str, Any]:
        sd = self.defs.structure_definition(type)
        assert sd is not None, type
        elements = sd["snapshot"]["element"]
        out: dict[str, Any] = {"resourceType": type}
        out.update(self._children(type, elements, type, top=type, force_one=True))
        out.update(INVARIANT_FIXES.get(type, {}))
        return out

    def _children(self, root: str, elements: list[dict[str, Any]], path: str, *, top: str,
                  force_one: bool = False) -> dict[str, Any]:
        depth = path.count(".") + 1
        direct = [e for e in elements if e["path"].startswith(path + ".") and e["path"].count(".") == depth]
        out: dict[str, Any] = {}
        for el in direct:
            name = el["path"].rsplit(".", 1)[1]
            if el.get("min", 0) < 1 or name in ("id", "extension", "modifierExtension"):
                continue
            out.update(self._value(root, elements, el, name, top=top))
        if not out and force_one:
            for el in direct:
                name = el["path"].rsplit(".", 1)[1]
                types = [t["code"] for t in el.get("type", [])]
                if name in SKIP or not types or "contentReference" in el:
                    continue
                if types[0] in PRIMITIVES or types[0] in COMPLEX or types[0] == "BackboneElement":
                    out.update(self._value(root, elements, el, name, top=top))
                    break
        return out

    def _value(self, root: str, elements: list[dict[str, Any]], el: dict[str, Any], name: str, *,
               top: str) -> dict[str, Any]:
        types = [t["code"] for t in el.get("type", [])]
        code = types[0] if types else "BackboneElement"
        key = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
        many = el.get("max") != "1"
        if code in ("BackboneElement", "Element"):
            value: Any = self._children(root, elements, el["path"], top=top, force_one=True)
        elif code == "code" or (code in ("Coding", "CodeableConcept") and self._required(el)):
            c = CODE_OVERRIDES.get((top, key)) or self._first_code(el)
            if code == "code":
                value = c if c is not None else "x"
            else:
                system, c2 = self._first_coding(el)
                coding = {"system": system, "code": c2}
                value = coding if code == "Coding" else {"coding": [coding]}
        elif code in PRIMITIVES:
            value = PRIMITIVES[code]
        elif code in COMPLEX and COMPLEX[code] is not None:
            value = COMPLEX[code]
        else:
            sd = self.defs.structure_definition(code)
            assert sd is not None, code
            value = self._children(code, sd["snapshot"]["element"], code, top=top, force_one=True)
        return {key: [value] if many else value}

    @staticmethod
    def _required(el: dict[str, Any]) -> bool:
        return (el.get("binding") or {}).get("strength") == "required"

    def _first_code(self, el: dict[str, Any]) -> str | None:
        return self._first_coding(el)[1] if self._required(el) else None

    def _first_coding(self, el: dict[str, Any]) -> tuple[str, str]:
        url = ((el.get("binding") or {}).get("valueSet") or "").split("|")[0]
        vs = self.defs.resolve(url) if url else None
        if vs is not None:
            for inc in (vs.get("compose") or {}).get("include", []):
                system = inc.get("system")
                if inc.get("concept"):
                    return system, inc["concept"][0]["code"]
                if system and not inc.get("filter"):
                    cs = self.defs.resolve(system)
                    if cs and cs.get("concept"):
                        return system, cs["concept"][0]["code"]
        return "http://example.org", "x"
