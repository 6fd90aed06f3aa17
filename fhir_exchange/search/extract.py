"""Index extraction (https://hl7.org/fhir/R4/search.html#table): the search values of a resource, one
:class:`IndexEntry` per value and parameter, at write time.

Each parameter's expression is compiled once per resource type (plans are rebuilt when the
definitions change, e.g. after a SearchParameter is written; existing resources pick the new
parameter up on ``$reindex``), by the FHIRPath engine's compiled back-end
(:mod:`fhir_exchange.fhir.fhirpath.compiled_typed`: closures over the JSON, ~1 µs, items typed by
choice suffix and ``as``/``ofType``); where it cannot compile or evaluate an expression, the full
evaluator's ``evaluate_typed`` answers. Composite parameters (search.html#composite) index each component
under ``code$i`` with a ``group`` number per element, so that stores can require the components to
come from the same element.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.compiled import Env, Unsupported
from fhir_exchange.fhir.fhirpath.compiled_typed import Item, compile_typed, search_environment, type_name
from fhir_exchange.search import fulltext, registry
from fhir_exchange.search.index import IndexEntry, Indexer
from fhir_exchange.search.params import KINDS, reference

# Each takes the resource and the environment its expressions run in (search_environment, made once
# per resource).
Extractor = Callable[[dict[str, Any], Env], list[IndexEntry]]
Evaluator = Callable[[dict[str, Any], Env], list[Item]]
Relative = Callable[[Item, dict[str, Any], Env], list[Item]]


def _full_typed(expression: str) -> Callable[[dict[str, Any], Any], list[Item]]:
    """The full evaluator's typed results, in the extractors' spelling (``FHIR.Quantity`` → Quantity)."""
    try:
        compiled = fhirpath.compile(expression)
    except fhirpath.FhirPathError:
        return lambda resource, context: []  # the definitions' checks refuse such expressions

    def run(resource: dict[str, Any], context: Any) -> list[Item]:
        try:
            values = compiled.evaluate_typed(resource, context)
        except fhirpath.FhirPathError:
            return []  # an expression that fails on this resource indexes nothing for it
        return [(v.value, type_name(v.type[5:]) if v.type and v.type.startswith("FHIR.") else None)
                for v in values]
    return run


def compile_expression(expression: str, resource_type: str) -> Evaluator | None:
    """An evaluator of ``expression`` for resources of ``resource_type``; None if no alternative of
    it applies. The compiled back-end, or the full evaluator where that cannot compile or evaluate."""
    full = _full_typed(expression)
    try:
        fast = compile_typed(expression, resource_type)
    except Unsupported:
        return lambda resource, env: full(resource, None)
    if fast is None:
        return None

    def run(resource: dict[str, Any], env: Env) -> list[Item]:
        try:
            return fast([resource], env)
        except Unsupported:
            return full(resource, None)
    return run


def compile_relative(expression: str) -> Relative:
    """A composite component's expression, relative to the composite's element."""
    full = _full_typed(expression)
    try:
        fast = compile_typed(expression)
    except Unsupported:
        fast = None

    def run(item: Item, resource: dict[str, Any], env: Env) -> list[Item]:
        if fast is not None:
            try:
                return fast([item[0]], env)
            except Unsupported:
                pass
        return full(resource, item[0])
    return run


def _plain(code: str, kind: str, ev: Evaluator) -> Extractor:
    extract = KINDS[kind].extract

    def run(resource: dict[str, Any], env: Env) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for item in ev(resource, env):
            out.extend(extract(code, item))
        return out

    return run


def _composite(sp: registry.SearchParam, ev: Evaluator) -> Extractor:
    comps: list[tuple[str, Relative, Callable[[str, Item], list[IndexEntry]]]] = [
        (f"{sp.code}${i}", compile_relative(c.expression), KINDS[c.kind].extract)
        for i, c in enumerate(sp.components)
    ]

    def run(resource: dict[str, Any], env: Env) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for group, element in enumerate(ev(resource, env)):
            rows: list[IndexEntry] = []
            for key, rel, extract in comps:
                part = [e for item in rel(element, resource, env) for e in extract(key, item)]
                if not part:
                    break  # every component must be present for the element to be searchable
                rows.extend(IndexEntry(e.param, e.kind, e.system, e.code, e.text, e.low, e.high, e.ref_type,
                                           e.ref_id, e.ref_version, e.uri, group, e.canon, e.canon_low,
                                           e.canon_high) for e in part)
            else:
                out.extend(rows)
        return out

    return run


def _fulltext(code: str) -> Extractor:
    words = fulltext.text_entries if code == "_text" else fulltext.content_entries

    def run(resource: dict[str, Any], env: Env) -> list[IndexEntry]:
        return words(code, resource)

    return run


def compile_plan(defs: Definitions, type: str) -> list[Extractor]:
    plan: list[Extractor] = []
    for sp in registry.params_for(defs, type).values():
        if sp.code in registry.FULLTEXT and sp.expression == registry.FULLTEXT[sp.code]:
            plan.append(_fulltext(sp.code))
            continue
        ev = compile_expression(sp.expression, type)
        if ev is None:
            continue
        plan.append(_composite(sp, ev) if sp.type == "composite" else _plain(sp.code, sp.type, ev))
    return plan


class TypeIndexer:
    """The indexer: per resource type a list of compiled extractors, rebuilt on definition changes."""

    def __init__(self, defs: Definitions, local_bases: Sequence[str] = ()) -> None:
        self.defs = defs
        # This server's base URLs: references written as absolute URLs on them are indexed as Type/id.
        self.local_bases = tuple(local_bases)
        self._plans: dict[str, list[Extractor]] = {}
        self._generation = defs.generation
        self._lock = threading.Lock()

    def plan(self, type: str) -> list[Extractor]:
        if self._generation != self.defs.generation:
            with self._lock:
                self._plans = {}
                self._generation = self.defs.generation
        plan = self._plans.get(type)
        if plan is None:
            with self._lock:
                plan = self._plans[type] = compile_plan(self.defs, type)
        return plan

    def __call__(self, type: str, resource: dict[str, Any]) -> Sequence[IndexEntry]:
        out: list[IndexEntry] = []
        env = search_environment(resource)
        for extractor in self.plan(type):
            out.extend(extractor(resource, env))
        if self.local_bases:
            return reference.localise_entries(out, self.local_bases)
        return out


def make_indexer(defs: Definitions, local_bases: Sequence[str] = ()) -> Indexer:
    """The indexer of the stores; ``local_bases`` are this server's (``Settings.local_base_urls``)."""
    return TypeIndexer(defs, local_bases)
