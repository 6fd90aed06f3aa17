"""Index extraction (https://hl7.org/fhir/R4/search.html#table): the search values of a resource, one
:class:`IndexEntry` per value and parameter, at write time.

Each parameter's expression is compiled once per resource type (plans are rebuilt when the
definitions change, e.g. after a SearchParameter is written; existing resources pick the new
parameter up on ``$reindex``). Composite parameters (search.html#composite) index each component
under ``code$i`` with a ``group`` number per element, so that stores can require the components to
come from the same element.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.search import fulltext, registry
from fhir_exchange.search.index import IndexEntry, Indexer
from fhir_exchange.search.params import KINDS, reference
from fhir_exchange.search.paths import (
    Evaluator,
    Item,
    compile_expression,
    compile_relative,
    expand_root,
    strip_root,
)

Extractor = Callable[[dict[str, Any]], list[IndexEntry]]


def _plain(code: str, kind: str, ev: Evaluator) -> Extractor:
    extract = KINDS[kind].extract

    def run(resource: dict[str, Any]) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for item in ev(resource):
            out.extend(extract(code, item))
        return out

    return run


def _composite(sp: registry.SearchParam, ev: Evaluator) -> Extractor:
    comps: list[tuple[str, Callable[[Item], list[Item]], Callable[[str, Item], list[IndexEntry]]]] = [
        (f"{sp.code}${i}", compile_relative(c.expression), KINDS[c.kind].extract)
        for i, c in enumerate(sp.components)
    ]

    def run(resource: dict[str, Any]) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for group, element in enumerate(ev(resource)):
            rows: list[IndexEntry] = []
            for key, rel, extract in comps:
                part = [e for item in rel(element) for e in extract(key, item)]
                if not part:
                    break  # every component must be present for the element to be searchable
                rows.extend(IndexEntry(e.param, e.kind, e.system, e.code, e.text, e.low, e.high, e.ref_type,
                                           e.ref_id, e.ref_version, e.uri, group) for e in part)
            else:
                out.extend(rows)
        return out

    return run


def _fulltext(code: str) -> Extractor:
    words = fulltext.text_entries if code == "_text" else fulltext.content_entries

    def run(resource: dict[str, Any]) -> list[IndexEntry]:
        return words(code, strip_root(resource))  # the JSON as written, without the choice aliases

    return run


# ``X.exists() and X != false`` (Patient.deceased, the one FHIRPath expression core Patient indexes):
# the full FHIRPath engine took 40% of a Patient's index extraction (issue 19); the walker reads X.
_EXISTS_NOT_FALSE = re.compile(r"^([A-Za-z][\w.]*)\.exists\(\) and \1 != false$")


def _exists_not_false(expression: str, type: str) -> Evaluator | None:
    found = _EXISTS_NOT_FALSE.match(expression)
    walk = None if found is None else compile_expression(found.group(1), type, registry.BASE_TYPES)
    full = None if walk is None else compile_expression(expression, type, registry.BASE_TYPES)
    if walk is None or full is None:
        return None
    path, engine = walk, full

    def run(resource: dict[str, Any]) -> list[Item]:
        values = [v for v, _ in path(resource)]
        if len(values) > 1:  # != on several values is FHIRPath's business (an error, or empty)
            return engine(resource)
        return [(bool(values) and values[0] is not False, None)]

    return run


def compile_plan(defs: Definitions, type: str) -> list[Extractor]:
    plan: list[Extractor] = []
    for sp in registry.params_for(defs, type).values():
        if sp.code in registry.FULLTEXT and sp.expression == registry.FULLTEXT[sp.code]:
            plan.append(_fulltext(sp.code))
            continue
        ev = _exists_not_false(sp.expression, type) or compile_expression(sp.expression, type, registry.BASE_TYPES)
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
        root = expand_root(resource)
        for extractor in self.plan(type):
            out.extend(extractor(root))
        if self.local_bases:
            return reference.localise_entries(out, self.local_bases)
        return out


def make_indexer(defs: Definitions, local_bases: Sequence[str] = ()) -> Indexer:
    """The indexer of the stores; ``local_bases`` are this server's (``Settings.local_base_urls``)."""
    return TypeIndexer(defs, local_bases)
