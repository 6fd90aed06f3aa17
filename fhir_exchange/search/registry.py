"""Which SearchParameters a resource type supports (https://hl7.org/fhir/R4/search.html#standard and
https://hl7.org/fhir/R4/searchparameter.html), derived from the loaded definitions and cached per
``Definitions.generation`` so that SearchParameter resources written to the server take effect.

A parameter is supported when it has an expression our indexer can evaluate and a type we index
(special parameters such as ``near`` and parameters without expression such as ``_text`` are left
out, and therefore rejected in strict mode and absent from the CapabilityStatement).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from fhir_exchange.definitions import Definitions

INDEXED_TYPES = frozenset({"token", "string", "date", "number", "quantity", "reference", "uri", "composite"})
BASE_TYPES = frozenset({"Resource", "DomainResource"})


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


class _Cache:
    def __init__(self) -> None:
        self.generation = -1
        self.by_type: dict[str, dict[str, SearchParam]] = {}
        self.lock = threading.Lock()


_caches: weakref.WeakKeyDictionary[Definitions, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _build(defs: Definitions, type: str) -> dict[str, SearchParam]:
    out: dict[str, SearchParam] = {}
    for sp in defs.search_parameters(type):
        code, kind, expr = sp.get("code"), sp.get("type"), sp.get("expression")
        if not code or code in out or kind not in INDEXED_TYPES or not expr:
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
    """The supported search parameters of ``type``, by code."""
    with _caches_lock:
        cache = _caches.get(defs)
        if cache is None:
            cache = _caches[defs] = _Cache()
    with cache.lock:
        if cache.generation != defs.generation:
            cache.by_type.clear()
            cache.generation = defs.generation
        hit = cache.by_type.get(type)
        if hit is None:
            hit = cache.by_type[type] = _build(defs, type)
        return hit


def common_params(defs: Definitions) -> dict[str, SearchParam]:
    """Parameters defined on Resource/DomainResource: the ones a system-level search may use."""
    return params_for(defs, "Resource")


def reference_targets(sp: SearchParam, defs: Definitions) -> tuple[str, ...]:
    if sp.targets:
        return sp.targets
    return tuple(defs.resource_types())


