"""Which SearchParameters a resource type supports (https://hl7.org/fhir/R4/search.html#standard and
https://hl7.org/fhir/R4/searchparameter.html), derived from the loaded definitions and cached per
``Definitions.generation`` so that SearchParameter resources written to the server take effect.

A parameter is supported when it has an expression our indexer can evaluate and a type we index.
Three have their own extraction: ``_text`` and ``_content`` (no expression; words of the narrative /
of all string content, :mod:`fhir_exchange.search.fulltext`) and ``near`` (the only ``special``
parameter indexed, :mod:`fhir_exchange.search.params.near`). Other special parameters and parameters
without expression are left out, and therefore rejected in strict mode and absent from the
CapabilityStatement.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_exchange.definitions import Definitions

INDEXED_TYPES = frozenset({"token", "string", "date", "number", "quantity", "reference", "uri", "composite"})
BASE_TYPES = frozenset({"Resource", "DomainResource"})
# Parameters without a FHIRPath expression, extracted by fulltext.py (the "expression" is a marker).
FULLTEXT = {"_text": "%narrative-words", "_content": "%content-words"}
# The server's own records of what was done (one per request, one per write) are searched by their
# coded elements; indexing every word of them would double the cost of each request they record.
NOT_WORD_INDEXED = frozenset({"AuditEvent", "Provenance"})
SPECIAL = frozenset({"near"})  # the special parameters we index (type "special" in the query model)


@dataclass(frozen=True, slots=True)
class Component:
    kind: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: str
    expression: str
    targets: tuple[str, ...]
    components: tuple[Component, ...]
    url: str


def _is_domain_resource(defs: Definitions, type: str) -> bool:
    sd = defs.structure_definition(type) or {}
    return str(sd.get("baseDefinition", "")).endswith("/DomainResource")


def _build(defs: Definitions, type: str) -> dict[str, SearchParam]:
    out: dict[str, SearchParam] = {}
    for sp in defs.search_parameters(type):
        code, kind, expr = sp.get("code"), sp.get("type"), sp.get("expression")
        if (code in FULLTEXT and type not in sp.get("base", ()) and "DomainResource" in sp.get("base", ())
                and not _is_domain_resource(defs, type)):
            continue  # _text on Bundle, Binary, Parameters: they have no narrative
        if code in FULLTEXT and type in NOT_WORD_INDEXED:
            continue
        if code in FULLTEXT and kind == "string" and not expr:
            expr = FULLTEXT[code]
        if not code or code in out or not expr or not (
                kind in INDEXED_TYPES or (kind == "special" and code in SPECIAL)):
            continue
        if code == "_id":
            # Several definitions exist (core "Resource.id" and "id", KR Core "Patient.id"): one meaning.
            expr, kind = "Resource.id", "token"
        comps: list[Component] = []
        if kind == "composite":
            ok = True
            for c in sp.get("component") or ():
                target = defs.resolve(c.get("definition", ""))
                ckind = (target or {}).get("type")
                cexpr = c.get("expression", "")
                if ckind not in INDEXED_TYPES or ckind == "composite" or not cexpr or "%resource" in cexpr:
                    ok = False
                    break
                comps.append(Component(ckind, cexpr))
            if not ok or len(comps) < 2:
                continue
        out[code] = SearchParam(code, kind, expr, tuple(sp.get("target") or ()), tuple(comps), sp.get("url", ""))
    return out


def params_for(defs: Definitions, type: str) -> dict[str, SearchParam]:
    """The supported search parameters of ``type``, by code (built once per type and definitions generation)."""
    by_type: dict[str, dict[str, SearchParam]] = defs.derived("search.params", dict)
    hit = by_type.get(type)
    if hit is None:
        hit = by_type.setdefault(type, _build(defs, type))
    return hit


def common_params(defs: Definitions) -> dict[str, SearchParam]:
    """Parameters defined on Resource/DomainResource: the ones a system-level search may use."""
    return params_for(defs, "Resource")


def reference_targets(sp: SearchParam, defs: Definitions) -> tuple[str, ...]:
    if sp.targets:
        return sp.targets
    return tuple(defs.resource_types())


