"""MongoDB compilation of search queries (https://hl7.org/fhir/R4/search.html), and the indexed fields
they run against: the same typed query model (:mod:`fhir_exchange.search.query`) the SQLite compiler
takes, with the same results and the same order (the property tests compare both stores with the
in-memory matcher).

Why this shape: MongoDB serves a query well when each predicate is an equality (or a range) on one
indexed field. So the extracted search values of a resource are stored *beside* it, in its own
document, under ``_s``, as flat arrays of strings that carry the parameter code as a prefix
(``"identifier|urn:mrn|123"``, see :func:`fhir_exchange.search.params.mkey`). One multikey index per
field family (not per parameter) serves every parameter of that family (a collection may have at
most 64 indexes; Patient alone has ~30 search parameters), and a token search is an ``$in`` on one
indexed array, never an ``$elemMatch`` over sub-documents. Only ranges (date, number, quantity) are
sub-documents matched with ``$elemMatch``: a range is two values that must come from the same entry.
Each parameter type's fields and conditions sit beside its SQL in :mod:`fhir_exchange.search.params`.

=============================  ==========================================  ===============================
field                          entries                                     serves
=============================  ==========================================  ===============================
``_s.tok``                     ``p|system|code``                           ``p=system|code``
``_s.tokc`` / ``_s.tokn``      ``p|code`` (any system / no system)         ``p=code`` / ``p=|code``; _id
``_s.toks`` / ``_s.tokt``      ``p|system`` / ``p|display or text``        ``p=system|`` / ``:text``
``_s.str`` / ``_s.strx``       ``p|normalised text`` / ``p|as written``    prefix, ``:contains`` / ``:exact``
``_s.ref`` / ``_s.refi``       ``p|Type|id`` / ``p|id``                    references, chains, _has
``_s.refv``, ``_s.refu(v)``    versioned, absolute / canonical URL         ``_history``, URLs
``_s.uri``                     ``p|uri``                                   equality, ``:below``, ``:above``
``_s.date/num/qty``            ``{p, lo, hi[, s, c, u, cd, clo, chi]}``    ranges with every prefix
``_s.geo``                     ``{p, lat, lon}``                           ``near`` (bounding box, staged)
``_s.cmp``                     per composite element: a small ``_s``       composites (components of
                                                                           one element, by ``group``)
``_s.has``                     parameter codes with a value                ``:missing``
``_o``                         ``{p, mn, mx}``: min and max sort value     ``_sort`` (not indexed)
=============================  ==========================================  ===============================

Deleted versions carry no ``_s``, so any positive predicate on ``_s`` selects live resources only;
a query made only of negations (``:not``, ``:missing=true``, ``_id:not``) adds ``del: false``.

Compilation: criteria are ANDed, a parameter's values ORed (equalities on one field merged into one
``$in``). ``:not`` is ``$nor`` (no value matches, a resource without the element included).
``near`` is staged too: its bounding box runs on ``_s.geo`` first, the candidates' exact distance is
checked in Python (the matcher's function) and the survivors become an ``$in`` on ``_id`` keys.
Chains and ``_has`` are staged: the inner criterion is run first on the other collection (to any
depth, recursively) and becomes an ``$in`` on ``_s.ref`` keys (chain) or on ``_id`` keys (``_has``).
Without ``_sort`` results come in creation order (``_c``, a creation sequence kept across updates:
SQLite's rid order); with ``_sort`` an aggregation computes each key as the MIN (ascending) or MAX
(descending) of the parameter's values, missing values last, ``_c`` breaking ties. This module has no
driver import: it builds plain dicts, and runs staged queries through a callback that
:mod:`fhir_exchange.store.mongo` provides (in the search's snapshot session).

Which index drives a combination of criteria (issue 14): the filter is an ``$and`` with one predicate
per criterion, each on one index, and no hint. MongoDB's planner races the candidate indexes for a
trial period and keeps the plan that produces results with the fewest works (for ``family=Kim&
gender=female``, the ``_s.str`` index of the rare family, not ``_s.tokc`` of the broad gender), caches
it per query shape and re-plans when it degrades: the selectivity choice SQLite makes by sampled counts
(:mod:`fhir_exchange.store.sqlite_search`), made by the server. SecantusDB, the test server, answers
``explain`` with a collection scan for such filters, so the choice is documented, not measured there.
Every find, aggregate and count runs under the store's deadline (``maxTimeMS``, store/mongo.py).

Visibility (:class:`fhir_exchange.search.query.Visibility`) is a clause of every filter the compiler
makes on a collection (:meth:`Compiler.filter`: the match set, so counts, pages and sorts, and the
staged chain and ``_has`` queries) and of each include step. On a shared type there is none; on any
other it is ``{$or: [{own: {$in: institutions}}, {_id: {$in: ids granted on that type}}]}`` (``own``
is the owner stored beside the resource), the granted ids staged once per type and search from the
``grants`` collection (grantee in the institutions, ``until`` absent or later than ``at``) through a
callback the store provides, in the same session. On a type the caller may not read (``types`` set on
the visibility and the type not in it) the clause is :data:`FALSE`: the search of that collection, a
chain or ``_has`` staged on it and an include step onto it match nothing. History documents of every
type get ``{t: {$in: readable types}}`` beside the clause. With ``types`` None nothing changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fhir_exchange.search import includes as include_loop
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params import KINDS, mkey, near
from fhir_exchange.search.params._keys import all_of
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
    NearValue,
    Not,
    Param,
    SortKey,
    Visibility,
)

# (keys, name) of the indexes every resource-type collection has. The listing index serves "all live
# resources of a type in creation order"; ``_c`` (creation sequence) is SQLite's rid order.
_FAMILIES = ("tok", "tokc", "tokn", "toks", "tokt", "str", "strx", "ref", "refi", "refv", "refu", "refuv",
             "uri", "has")
TYPE_INDEXES: list[tuple[list[tuple[str, int]], str]] = [
    ([("del", 1), ("_c", 1)], "live_by_creation"),
    *[([(f"_s.{f}", 1)], f"s_{f}") for f in _FAMILIES],
    ([("_s.date.p", 1), ("_s.date.lo", 1), ("_s.date.hi", 1)], "s_date"),
    ([("_s.num.p", 1), ("_s.num.lo", 1), ("_s.num.hi", 1)], "s_num"),
    ([("_s.qty.p", 1), ("_s.qty.lo", 1), ("_s.qty.hi", 1)], "s_qty"),
    ([("_s.qty.p", 1), ("_s.qty.cd", 1), ("_s.qty.clo", 1), ("_s.qty.chi", 1)], "s_qtyc"),  # canonical UCUM
    ([("_s.cmp.p", 1)], "s_cmp"),
    ([("_s.geo.p", 1), ("_s.geo.lat", 1), ("_s.geo.lon", 1)], "s_geo"),
]

ORDER: list[tuple[str, int]] = [("_c", 1)]
FALSE: dict[str, Any] = {"_id": {"$in": []}}  # matches nothing
LIVE: dict[str, Any] = {"del": False}
ID = "_id"  # the pseudo-parameter of the logical id in ``_s.tokc``

Find = Callable[[str, dict[str, Any], dict[str, Any]], Awaitable[list[dict[str, Any]]]]
"""(resource type, filter, projection) -> documents: a staged query, run by the store."""

Granted = Callable[[Visibility, str | None], Awaitable[list[tuple[str, str]]]]
"""(visibility, resource type or None for all) -> the (type, id) granted to its institutions at its ``at``."""

OWNER = "own"  # the field of the owner (institution) on current and history documents


# -- the stored fields ------------------------------------------------------------------------------


def _fields(entries: Sequence[IndexEntry]) -> dict[str, list[Any]]:
    s: dict[str, list[Any]] = {}
    seen: set[tuple[str, Any]] = set()
    for e in entries:
        kind = KINDS.get(e.kind)
        if kind is None:
            continue
        for field, value in kind.mongo_index(e):
            k = (field, repr(value) if isinstance(value, dict) else value)
            if k not in seen:
                seen.add(k)
                s.setdefault(field, []).append(value)
        if ("has", e.param) not in seen:
            seen.add(("has", e.param))
            s.setdefault("has", []).append(e.param)
    return s


def index_fields(id: str, entries: Sequence[IndexEntry]) -> dict[str, Any]:
    """The ``_s`` sub-document of a live resource from its extracted index entries."""
    plain = [e for e in entries if "$" not in e.param]
    s: dict[str, Any] = _fields(plain)
    s.setdefault("tokc", []).insert(0, mkey(ID, id))
    groups: dict[tuple[str, int | None], list[IndexEntry]] = {}
    for e in entries:
        if "$" in e.param:  # a composite component: code$i, grouped by the element it came from
            groups.setdefault((e.param.rpartition("$")[0], e.group), []).append(e)
    if groups:
        s["cmp"] = [{"p": base, **_fields(es)} for (base, _g), es in groups.items()]
    return s


UNSET: dict[str, str] = {"_s": "", "_o": ""}  # what a delete removes


def stored_fields(id: str, entries: Sequence[IndexEntry]) -> dict[str, Any]:
    """The search fields stored beside a live resource: ``_s`` (criteria) and ``_o`` (sort values)."""
    return {"_s": index_fields(id, entries), "_o": sort_values(entries)}


def sort_values(entries: Sequence[IndexEntry]) -> list[dict[str, Any]]:
    """``_o``: per parameter the MIN and MAX of its sort column (what SQLite's ORDER BY computes)."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        kind = KINDS.get(e.kind)
        if kind is None or "$" in e.param:
            continue
        v = getattr(e, kind.SORT_COLUMN)
        if v is None:
            continue
        cur = out.get(e.param)
        if cur is None:
            out[e.param] = {"p": e.param, "mn": v, "mx": v}
        else:
            cur["mn"] = min(cur["mn"], v)
            cur["mx"] = max(cur["mx"], v)
    return list(out.values())


def ref_targets(refs: Sequence[str], code: str, type: str | None = None) -> list[tuple[str, str]]:
    """The (type, id) a resource's ``_s.ref`` keys give for reference parameter ``code``."""
    head = mkey(code, "")
    out: list[tuple[str, str]] = []
    for r in refs:
        if r.startswith(head):
            t, bar, i = r[len(head):].partition("|")
            if bar and (type is None or t == type):
                out.append((t, i))
    return out


# -- criteria -----------------------------------------------------------------------------------------


def _or(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """The disjunction of clauses; equalities on one field become one ``$in``."""
    merged: dict[str, list[Any]] = {}
    rest: list[dict[str, Any]] = []
    for c in clauses:
        if len(c) == 1:
            (field, value), = c.items()
            if not field.startswith("$") and not isinstance(value, dict):
                merged.setdefault(field, [])
                if value not in merged[field]:
                    merged[field].append(value)
                continue
        rest.append(c)
    out = [{f: vs[0]} if len(vs) == 1 else {f: {"$in": vs}} for f, vs in merged.items()] + rest
    if not out:
        return FALSE
    return out[0] if len(out) == 1 else {"$or": out}


def visibility_clause(vis: Visibility, type: str, granted_ids: Sequence[str]) -> dict[str, Any] | None:
    """The visibility clause on collection ``type`` (None: everything is visible, FALSE: nothing)."""
    if not vis.readable(type):
        return FALSE
    if type in vis.shared_types:
        return None
    ors: list[dict[str, Any]] = []
    if vis.institutions:
        ors.append({OWNER: {"$in": sorted(vis.institutions)}})
    if granted_ids:
        ors.append({"_id": {"$in": list(granted_ids)}})
    if not ors:
        return FALSE
    return ors[0] if len(ors) == 1 else {"$or": ors}


async def history_clause(vis: Visibility, type: str | None, granted: Granted) -> dict[str, Any] | None:
    """The visibility clause on ``history`` documents (``t``, ``i``, ``own``) of ``type`` (None: all)."""
    if type is not None and not vis.readable(type):
        return FALSE
    readable: dict[str, Any] | None = None  # the readable types, when the type is not known
    if type is None and vis.types is not None:
        if not vis.types:
            return FALSE
        readable = {"t": {"$in": sorted(vis.types)}}
    reach = await _history_reach(vis, type, granted)
    if readable is None or reach is FALSE:
        return reach
    return readable if reach is None else all_of(readable, reach)


async def _history_reach(vis: Visibility, type: str | None, granted: Granted) -> dict[str, Any] | None:
    """Owned, shared or granted (the clause of :func:`history_clause` without the readable types)."""
    if type is not None and type in vis.shared_types:
        return None
    ors: list[dict[str, Any]] = []
    if vis.institutions:
        ors.append({OWNER: {"$in": sorted(vis.institutions)}})
    if vis.shared_types and type is None:
        ors.append({"t": {"$in": sorted(vis.shared_types)}})
    by_type: dict[str, list[str]] = {}
    for t, i in await granted(vis, type):
        if vis.readable(t):  # the grants on other types would match nothing beside the type clause
            by_type.setdefault(t, []).append(i)
    ors += [{"t": t, "i": {"$in": ids}} for t, ids in sorted(by_type.items())]
    if not ors:
        return FALSE
    return ors[0] if len(ors) == 1 else {"$or": ors}


class Compiler:
    """Compiles criteria into a filter on one resource type's collection (staged queries via ``find``),
    with the visibility clause when ``visibility`` is set (grants staged through ``granted``)."""

    def __init__(self, find: Find, visibility: Visibility | None = None, granted: Granted | None = None) -> None:
        self._find = find
        self.visibility = visibility
        self._granted = granted
        self._vis: dict[str, dict[str, Any] | None] = {}

    async def visible(self, type: str) -> dict[str, Any] | None:
        """The visibility clause on ``type`` (None when there is no visibility or it always holds)."""
        vis = self.visibility
        if vis is None:
            return None
        if type not in self._vis:
            ids: list[str] = []
            if (vis.readable(type) and type not in vis.shared_types and vis.institutions
                    and self._granted is not None):
                ids = sorted({i for _t, i in await self._granted(vis, type)})
            self._vis[type] = visibility_clause(vis, type, ids)
        return self._vis[type]

    async def filter(self, criteria: Sequence[Criterion], type: str) -> dict[str, Any]:
        """The filter of the ANDed ``criteria`` on ``type`` (``{del: false}`` when there are none), and
        the visibility clause."""
        clauses: list[dict[str, Any]] = []
        positive = False
        vis = await self.visible(type)
        if vis is FALSE:
            return FALSE
        for c in criteria:
            clause, pos = await self.criterion(c, type)
            if clause is FALSE:
                return FALSE
            positive = positive or pos
            clauses.append(clause)
        if not positive:
            clauses.insert(0, LIVE)
        if vis is not None:
            clauses.append(vis)
        return all_of(*clauses)

    async def criterion(self, c: Criterion, type: str) -> tuple[dict[str, Any], bool]:
        """(clause, positive): a positive clause selects live resources only by itself."""
        if isinstance(c, Param):
            if c.type == "special" and c.modifier != "missing":
                return await self.near(c, type), True
            return self.param(c)
        if isinstance(c, IdIn):
            if c.type is not None and c.type != type:  # ids of one type only (a system-level _list)
                return ({}, False) if c.negate else (FALSE, True)
            clause = _or([{"_s.tokc": mkey(ID, i)} for i in c.ids])
            return ({"$nor": [clause]}, False) if c.negate else (clause, True)
        if isinstance(c, AnyOf):
            parts = [await self.criterion(x, type) for x in c.criteria]
            branches = [p if pos else all_of(LIVE, p) for p, pos in parts if p is not FALSE]
            return _or(branches), True
        if isinstance(c, AllOf | Not):
            return await self.boolean(c, type)
        if isinstance(c, Chain):
            return await self.chain(c), True
        if isinstance(c, Has):
            return await self.has(c, type), True
        raise TypeError(f"Unknown criterion {c!r}")

    async def boolean(self, c: AllOf | Not, type: str) -> tuple[dict[str, Any], bool]:
        """``and`` / ``not`` of a ``_filter`` (search_filter.html): ``$and`` / ``$nor``. A ``$nor`` also
        matches deleted documents (they have no ``_s``), so it is not positive: :meth:`filter` (or an
        enclosing ``AnyOf``) adds ``{del: false}``."""
        if isinstance(c, Not):
            inner, _pos = await self.criterion(c.criterion, type)
            if inner is FALSE:
                return {}, False
            return ({"$nor": [inner]}, False) if inner else (FALSE, True)
        clauses: list[dict[str, Any]] = []
        positive = False
        for x in c.criteria:
            clause, pos = await self.criterion(x, type)
            if clause is FALSE:
                return FALSE, True
            positive = positive or pos
            if clause:
                clauses.append(clause)
        if not clauses:
            return {}, positive
        return (clauses[0] if len(clauses) == 1 else {"$and": clauses}), positive

    def param(self, p: Param) -> tuple[dict[str, Any], bool]:
        if p.type == "composite":
            return self.composite(p), True
        if p.modifier == "missing":
            v = p.values[0]
            assert isinstance(v, MissingValue)
            return ({"_s.has": {"$ne": p.code}}, False) if v.missing else ({"_s.has": p.code}, True)
        if not p.values:
            return ({}, False) if p.modifier == "not" else (FALSE, True)
        kind = KINDS[p.type]
        clause = _or([kind.mongo(v, p.modifier, p.code) for v in p.values])
        if p.modifier == "not":
            return {"$nor": [clause]}, False
        return clause, True

    @staticmethod
    def composite(p: Param) -> dict[str, Any]:
        ors: list[dict[str, Any]] = []
        for v in p.values:
            assert isinstance(v, CompositeValue)
            conds = [KINDS[kind].mongo(part, None, f"{p.code}${i}", "")
                     for i, (kind, part) in enumerate(zip(p.components, v.parts, strict=True))]
            ors.append({"_s.cmp": {"$elemMatch": all_of({"p": p.code}, *conds)}})
        return _or(ors)

    async def chain(self, c: Chain) -> dict[str, Any]:
        keys: list[str] = []
        for target in c.target_types:
            inner = await self.filter([c.criterion], target)
            if inner is FALSE:
                continue
            for d in await self._find(target, inner, {"_id": 1}):
                keys.append(mkey(c.code, target, d["_id"]))
        return {"_s.ref": {"$in": keys}} if keys else FALSE

    async def near(self, p: Param, type: str) -> dict[str, Any]:
        """The ids of the resources of ``type`` within some value's distance: the box as a staged
        query, then the exact check of :func:`near.within` on the candidate positions."""
        ids: list[str] = []
        for v in p.values:
            assert isinstance(v, NearValue)
            box = all_of(LIVE, KINDS["special"].mongo(v, None, p.code))
            for d in await self._find(type, box, {"_s.geo": 1}):
                if any(g.get("p") == p.code and near.within(g.get("lat"), g.get("lon"), v.lat, v.lon, v.km)
                       for g in d.get("_s", {}).get("geo", ())) and d["_id"] not in ids:
                    ids.append(d["_id"])
        return {"_s.tokc": {"$in": [mkey(ID, i) for i in ids]}} if ids else FALSE

    async def has(self, c: Has, type: str) -> dict[str, Any]:
        inner = await self.filter([c.criterion], c.type)
        if inner is FALSE:
            return FALSE
        ids: set[str] = set()
        for d in await self._find(c.type, inner, {"_s.ref": 1}):
            ids.update(i for _t, i in ref_targets(d.get("_s", {}).get("ref", ()), c.code, type))
        return {"_s.tokc": {"$in": [mkey(ID, i) for i in sorted(ids)]}} if ids else FALSE


# -- sorting --------------------------------------------------------------------------------------------


def sort_pipeline(filt: dict[str, Any], sort: Sequence[SortKey], skip: int, limit: int) -> list[dict[str, Any]]:
    """The aggregation of one sorted page: ``k<i>`` the i-th sort value, ``n<i>`` 1 when it is missing."""
    add: dict[str, Any] = {}
    proj: dict[str, Any] = {"_c": 1}
    order: dict[str, int] = {}
    for i, s in enumerate(sort):
        if s.code in ("_lastUpdated", "_id"):
            proj[f"k{i}"] = "$lu" if s.code == "_lastUpdated" else "$_id"
            proj[f"n{i}"] = {"$literal": 0}
        else:
            add[f"e{i}"] = {"$first": {"$filter": {"input": {"$ifNull": ["$_o", []]},
                                                   "cond": {"$eq": ["$$this.p", s.code]}}}}
            proj[f"k{i}"] = f"$e{i}.{'mx' if s.descending else 'mn'}"
            proj[f"n{i}"] = {"$cond": [{"$ifNull": [f"$e{i}", False]}, 0, 1]}
        order[f"n{i}"] = 1
        order[f"k{i}"] = -1 if s.descending else 1
    order["_c"] = 1
    stages: list[dict[str, Any]] = [{"$match": filt}]
    if add:
        stages.append({"$addFields": add})
    stages += [{"$project": proj}, {"$sort": order}]
    if skip:
        stages.append({"$skip": skip})
    stages.append({"$limit": limit})
    return stages


class _Desc:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.v < self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v


def merge_key(sort: Sequence[SortKey]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The order of :func:`sort_pipeline` rows in Python (merging the pages of several collections)."""
    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for i, s in enumerate(sort):
            if row.get(f"n{i}", 1) == 1:
                out += [1, 0]
            else:
                v = row.get(f"k{i}")
                out += [0, _Desc(v) if s.descending else v]
        out.append(row.get("_c", 0))
        return tuple(out)

    return key


# -- _include / _revinclude -----------------------------------------------------------------------------

Key = tuple[str, str]


async def includes(find: Find, specs_inc: Sequence[Include], specs_rev: Sequence[Include], page: Sequence[Key],
                   compiler: Compiler | None = None) -> list[Key]:
    """The keys included for ``page``, in creation order, without the page; ``:iterate`` ones are applied
    again to what they include, up to a fixed depth (:mod:`fhir_exchange.search.includes`). With a
    ``compiler``, only resources visible under its visibility are found."""
    refs: dict[Key, list[str]] = {}
    created: dict[Key, int] = {}

    async def load_refs(keys: Sequence[Key]) -> None:
        by_type: dict[str, list[str]] = {}
        for t, i in keys:
            if (t, i) not in refs:
                by_type.setdefault(t, []).append(i)
                refs[(t, i)] = []
        for t, ids in by_type.items():
            for d in await find(t, {"_id": {"$in": ids}}, {"_s.ref": 1}):
                refs[(t, d["_id"])] = list(d.get("_s", {}).get("ref", ()))

    async def found(t: str, filt: dict[str, Any]) -> list[Key]:
        vis = None if compiler is None else await compiler.visible(t)
        if vis is FALSE:
            return []
        got = []
        for d in await find(t, filt if vis is None else all_of(filt, vis), {"_c": 1}):
            created[(t, d["_id"])] = d.get("_c", 0)
            got.append((t, d["_id"]))
        return got

    async def apply(inc: Include, rev: bool, frontier: list[Key]) -> list[Key]:
        if not rev:
            sources = [k for k in frontier if k[0] == inc.source_type]
            await load_refs(sources)
            by_type: dict[str, set[str]] = {}
            for k in sources:
                for t, i in ref_targets(refs[k], inc.code, inc.target_type):
                    by_type.setdefault(t, set()).add(i)
            got: list[Key] = []
            for t, ids in by_type.items():
                got += await found(t, {"_s.tokc": {"$in": [mkey(ID, i) for i in sorted(ids)]}})
            return got
        keys = [mkey(inc.code, t, i) for t, i in frontier if inc.target_type is None or t == inc.target_type]
        return await found(inc.source_type, {"_s.ref": {"$in": keys}}) if keys else []

    async def lookup(specs: list[include_loop.Spec], frontier: list[Key]) -> list[Key]:
        return [k for inc, rev in specs for k in await apply(inc, rev, frontier)]

    return await include_loop.arun(lookup, specs_inc, specs_rev, page, created.__getitem__)
