"""``_summary`` and ``_elements`` (https://hl7.org/fhir/R4/search.html#summary, #elements).

Summary elements come from ``ElementDefinition.isSummary`` of the type's core StructureDefinition;
a subsetted resource carries the SUBSETTED tag (v3-ObservationValue) so that nobody stores it back.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import invalid

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
SUMMARY_VALUES = frozenset({"true", "false", "text", "data", "count"})
_ALWAYS = ("resourceType", "id", "meta")


class SummaryElements:
    """Per type: top-level element names that are summary, and those that are mandatory."""

    def __init__(self, defs: Definitions) -> None:
        self._defs = defs
        self._cache: dict[tuple[str, int], tuple[frozenset[str], frozenset[str]]] = {}

    def of(self, type: str) -> tuple[frozenset[str], frozenset[str]]:
        key = (type, self._defs.generation)
        hit = self._cache.get(key)
        if hit is None:
            sd = self._defs.structure_definition(type) or {}
            summary: set[str] = set()
            mandatory: set[str] = set()
            for el in (sd.get("snapshot") or {}).get("element", []):
                path: str = el.get("path", "")
                parts = path.split(".")
                if len(parts) != 2:
                    continue
                name = parts[1]
                names = [name]
                if name.endswith("[x]"):
                    names = [name[:-3] + (t.get("code", "")[:1].upper() + t.get("code", "")[1:])
                             for t in el.get("type", [])]
                if el.get("isSummary"):
                    summary.update(names)
                if el.get("min", 0) > 0:
                    mandatory.update(names)
            hit = (frozenset(summary), frozenset(mandatory))
            self._cache[key] = hit
        return hit


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(SUBSETTED)
    meta["tag"] = tags
    resource["meta"] = meta
    return resource


def _keep(resource: dict[str, Any], names: set[str] | frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in resource.items()
            if k in _ALWAYS or k in names or (k.startswith("_") and k[1:] in names)}


def apply(summaries: SummaryElements, resource: dict[str, Any], summary: str | None,
          elements: list[str] | None) -> dict[str, Any]:
    """The resource reduced per ``_summary`` / ``_elements`` (unchanged when neither applies)."""
    type = resource.get("resourceType", "")
    if summary and summary not in SUMMARY_VALUES:
        raise invalid(f"Invalid _summary value '{summary}': use true, false, text, data or count", "_summary")
    if summary in ("true", "text", "data"):
        summ, mandatory = summaries.of(type)
        if summary == "true":
            return _tag(_keep(resource, summ))
        if summary == "text":
            return _tag(_keep(resource, {"text"} | mandatory))
        return _tag({k: v for k, v in resource.items() if k != "text"})
    if elements:
        wanted = {e.strip().split(".")[0] for e in elements if e.strip()}
        # Elements given as Type.name (allowed in search.html) keep their last part.
        wanted |= {e.strip().split(".", 1)[1] for e in elements if e.strip().startswith(type + ".")}
        _summ, mandatory = summaries.of(type)
        return _tag(_keep(resource, wanted | mandatory))
    return resource
