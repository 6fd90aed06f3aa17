"""The in-memory matcher: FHIR search semantics (https://hl7.org/fhir/R4/search.html) evaluated
directly over a collection of resources, with no store.

It is the executable reference the stores are tested against (property tests check that a store
returns exactly what :meth:`Matcher.search` returns). It shares with the stores only the value
extraction (:mod:`fhir_exchange.search.extract`) and each type's row predicate (``match`` beside
``sql`` in :mod:`fhir_exchange.search.params`); criteria combination, ``:not``/``:missing``, chains,
``_has``, composites, includes, sorting and paging are implemented here independently of any SQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_exchange.definitions import Definitions
from fhir_exchange.search import includes
from fhir_exchange.search.extract import make_indexer
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params import KINDS
from fhir_exchange.search.query import (
    AllOf,
    AnyOf,
    Chain,
    CompositeValue,
    Criterion,
    Has,
    IdIn,
    Include,
    MissingValue,
    Not,
    Param,
    SearchQuery,
    SortKey,
    Visibility,
)

Key = tuple[str, str]  # (type, id)


class GrantLike(Protocol):
    """A grant (:class:`fhir_exchange.store.port.Grant`; the search layer does not import the store's)."""

    @property
    def grantee(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def until(self) -> str | None: ...


@dataclass(slots=True)
class MatchResult:
    matches: list[Key]
    total: int | None
    includes: list[Key] = field(default_factory=list)


class Matcher:
    """Search over current resources given in insertion order (the order a store assigns rids).

    Visibility (:class:`Visibility` on a query): each resource's owner is given to :meth:`put` (resources
    themselves carry none), and the grants as ``(basis, grant)`` pairs (:meth:`replace_grants`)."""

    def __init__(self, defs: Definitions, resources: Iterable[dict[str, Any]],
                 owners: dict[Key, str | None] | None = None,
                 grants: Iterable[tuple[str, GrantLike]] = ()) -> None:
        self._index = make_indexer(defs)
        self.resources: dict[Key, dict[str, Any]] = {}
        self.order: dict[Key, int] = {}
        self.entries: dict[Key, dict[str, list[IndexEntry]]] = {}
        self.owners: dict[Key, str | None] = {}
        self.grants: list[tuple[str, GrantLike]] = list(grants)
        for r in resources:
            self.put(r, (owners or {}).get((r["resourceType"], r["id"])))

    def put(self, resource: dict[str, Any], owner: str | None = None) -> None:
        k = (resource["resourceType"], resource["id"])
        self.resources[k] = resource
        self.owners[k] = owner
        self.order.setdefault(k, len(self.order))
        by_param: dict[str, list[IndexEntry]] = defaultdict(list)
        for e in self._index(k[0], resource):
            by_param[e.param].append(e)
        self.entries[k] = by_param

    def delete(self, type: str, id: str) -> None:
        self.resources.pop((type, id), None)
        self.entries.pop((type, id), None)
        self.owners.pop((type, id), None)

    def replace_grants(self, basis: str, grants: Sequence[GrantLike]) -> None:
        self.grants = [(b, g) for b, g in self.grants if b != basis] + [(basis, g) for g in grants]

    # -- visibility ---------------------------------------------------------------------------

    def granted(self, vis: Visibility, k: Key) -> bool:
        return any(g.grantee in vis.institutions and (g.type, g.id) == k and (g.until is None or g.until > vis.at)
                   for _b, g in self.grants)

    def visible(self, k: Key, vis: Visibility | None) -> bool:
        """Of a readable type, and owned by one of the institutions, of a shared type, or granted to one
        of them at ``vis.at``."""
        if vis is None:
            return True
        if not vis.readable(k[0]):
            return False
        owner = self.owners.get(k)
        return (owner is not None and owner in vis.institutions) or k[0] in vis.shared_types or self.granted(vis, k)

    # -- criteria -----------------------------------------------------------------------------

    def _param(self, k: Key, p: Param) -> bool:
        kind = KINDS.get(p.type)
        if p.type == "composite":
            return self._composite(k, p)
        assert kind is not None
        rows = self.entries[k].get(p.code, [])
        if p.modifier == "missing":
            v = p.values[0]
            assert isinstance(v, MissingValue)
            return (not rows) == v.missing
        hit = any(kind.match(e, v, p.modifier) for e in rows for v in p.values)
        return not hit if p.modifier == "not" else hit

    def _composite(self, k: Key, p: Param) -> bool:
        entries = self.entries[k]
        for v in p.values:
            assert isinstance(v, CompositeValue)
            groups: set[int | None] | None = None
            for i, (kind_name, part) in enumerate(zip(p.components, v.parts, strict=True)):
                kind = KINDS[kind_name]
                g = {e.group for e in entries.get(f"{p.code}${i}", []) if kind.match(e, part, None)}
                groups = g if groups is None else groups & g
            if groups:
                return True
        return False

    def _targets(self, k: Key, code: str, types: tuple[str, ...]) -> list[Key]:
        out: list[Key] = []
        for e in self.entries[k].get(code, []):
            if e.kind == "reference" and e.ref_type in types and e.ref_id is not None:
                t = (e.ref_type, e.ref_id)
                if t in self.resources:
                    out.append(t)
        return out

    def matches(self, k: Key, c: Criterion, vis: Visibility | None = None) -> bool:
        """Whether ``k`` meets ``c``; chains and ``_has`` go only through resources visible under ``vis``."""
        if isinstance(c, Param):
            return self._param(k, c)
        if isinstance(c, IdIn):
            return (k[1] in c.ids and (c.type is None or k[0] == c.type)) != c.negate
        if isinstance(c, AnyOf):
            return any(self.matches(k, x, vis) for x in c.criteria)
        if isinstance(c, AllOf):
            return all(self.matches(k, x, vis) for x in c.criteria)
        if isinstance(c, Not):
            return not self.matches(k, c.criterion, vis)
        if isinstance(c, Chain):
            return any(self.visible(t, vis) and self.matches(t, c.criterion, vis)
                       for t in self._targets(k, c.code, c.target_types))
        if isinstance(c, Has):
            for src in self.resources:
                if src[0] != c.type:
                    continue
                if (k in self._targets(src, c.code, (k[0],)) and self.visible(src, vis)
                        and self.matches(src, c.criterion, vis)):
                    return True
            return False
        raise TypeError(f"Unknown criterion {c!r}")

    # -- sorting ------------------------------------------------------------------------------

    def _sort_value(self, k: Key, s: SortKey) -> Any:
        if s.code == "_lastUpdated":
            return (self.resources[k].get("meta") or {}).get("lastUpdated")
        if s.code == "_id":
            return k[1]
        col = KINDS[s.type].SORT_COLUMN
        values = [getattr(e, col) for e in self.entries[k].get(s.code, []) if getattr(e, col) is not None]
        if not values:
            return None
        return max(values) if s.descending else min(values)

    def _sorted(self, keys: list[Key], sort: tuple[SortKey, ...]) -> list[Key]:
        out = sorted(keys, key=lambda k: self.order[k])
        for s in reversed(sort):  # stable sorts from the last key to the first
            present = [k for k in out if self._sort_value(k, s) is not None]
            missing = [k for k in out if self._sort_value(k, s) is None]
            def value(k: Key, s: SortKey = s) -> Any:
                return self._sort_value(k, s)

            present.sort(key=value, reverse=s.descending)
            out = present + missing
        return out

    # -- includes -----------------------------------------------------------------------------

    def _include(self, inc: Include, rev: bool, frontier: list[Key], vis: Visibility | None) -> list[Key]:
        out: list[Key] = []
        if not rev:
            for k in frontier:
                if k[0] != inc.source_type:
                    continue
                for e in self.entries[k].get(inc.code, []):
                    if e.kind != "reference" or e.ref_type is None or e.ref_id is None:
                        continue
                    t = (e.ref_type, e.ref_id)
                    if (t in self.resources and (inc.target_type is None or t[0] == inc.target_type)
                            and self.visible(t, vis)):
                        out.append(t)
        else:
            wanted = {k for k in frontier if inc.target_type is None or k[0] == inc.target_type}
            for src in self.resources:
                if src[0] != inc.source_type or not self.visible(src, vis):
                    continue
                for e in self.entries[src].get(inc.code, []):
                    if e.kind == "reference" and (e.ref_type, e.ref_id) in wanted:
                        out.append(src)
        return out

    def _includes(self, query: SearchQuery, page: list[Key]) -> list[Key]:
        def lookup(specs: list[includes.Spec], frontier: list[Key]) -> list[Key]:
            return [k for inc, rev in specs for k in self._include(inc, rev, frontier, query.visibility)]

        return includes.run(lookup, query.include, query.revinclude, page, self.order.__getitem__)

    # -- search -------------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> MatchResult:
        types = {query.type} if query.type else set(query.types)
        vis = query.visibility
        hits = [k for k in self.resources if (not types or k[0] in types) and self.visible(k, vis)
                and all(self.matches(k, c, vis) for c in query.params)]
        ordered = self._sorted(hits, query.sort)
        page = ordered[query.offset : query.offset + query.count]
        total = None if query.total == "none" else len(hits)
        return MatchResult(page, total, self._includes(query, page))
