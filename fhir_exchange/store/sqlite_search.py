"""SQLite compilation of search queries (https://hl7.org/fhir/R4/search.html) and the index tables
they run against.

One table per parameter type (columns from :mod:`fhir_exchange.search.params`), each row keyed by
``rid`` (the resource row) and ``param`` = ``Type.code`` (so one index lookup is selective across
types). Index rows exist only for current, non-deleted versions: a write replaces them in the same
transaction, a delete removes them.

Every criterion compiles to a predicate over a resource row (``alias.rid IN (SELECT rid FROM
search_x WHERE ...)``), so criteria nest freely: chains join the reference table to the target
resource by (type, id), ``_has`` goes the other way. Without ``_sort`` results come in ``rid`` order
(insertion order: stable, and the same after a restart, so offset paging links stay valid); with
``_sort`` each key is the MIN (ascending) or MAX (descending) of the parameter's values, missing
values last, ``rid`` breaking ties.

Visibility (:class:`fhir_exchange.search.query.Visibility`) is a predicate on a resource row,
:func:`visible`: ``owner IN (institutions) OR type IN (shared types) OR EXISTS (a grant to one of the
institutions on (type, id) whose until is NULL or later than at)``, ANDed with ``type IN (readable
types)`` when the caller's types are limited (its scopes); constant parts are folded (a type known to
be shared and readable needs no predicate at all, a type known to be unreadable is "0"). It is
compiled into every subquery that reads resources: the match set (so counts, pages and sort walks),
chain targets, ``_has`` sources and each include step. Where the rows come from the index tables
alone (:func:`index_source`, the sort walk), it is probed per rid through ``resource_rid_vis``, a
covering index of (rid, type, deleted, owner, id), never the resource row with its JSON body.
Without visibility, or with every type readable (``types`` None), the SQL is exactly what it was.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from fhir_exchange.search import includes as include_loop
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
    Visibility,
)
from fhir_exchange.store.port import Grant

_TABLE_DDL = {
    "token": "system TEXT, code TEXT, text TEXT",
    "string": "text TEXT, code TEXT",
    "date": "low INTEGER, high INTEGER",
    "number": "low REAL, high REAL",
    "quantity": "low REAL, high REAL, system TEXT, code TEXT, text TEXT",
    "reference": "ref_type TEXT, ref_id TEXT, ref_version TEXT, uri TEXT, system TEXT, code TEXT",
    "uri": "uri TEXT",
    "special": "low REAL, high REAL",  # near: latitude, longitude
}
# Value indexes end in ``rid`` so that they cover the criteria: a rid set, a count or a page is read
# from the index alone, never from the table rows. The date table also has (param, rid, ...): a scan of
# one parameter in rid order, for counts and GROUP BY rid without a temporary b-tree.
_INDEXES = {
    "token": ["param, code, system, rid", "param, text, rid"],
    "string": ["param, text, rid"],
    "date": ["param, low, high, rid", "param, high, low, rid", "param, rid, low, high"],
    "number": ["param, low, high, rid"],
    "quantity": ["param, low, high, rid"],
    "reference": ["param, ref_id, ref_type, rid", "param, uri, rid"],
    "uri": ["param, uri, rid"],
    "special": ["param, low, high, rid"],
}

# The per-row index, (rid, param, then the columns a probe of a criterion or a sort value reads): deletes
# by rid, the sort values of _sort, _has, and the probes of the criteria that do not drive a query (one
# per driving row). Covering those columns makes a probe one index seek, not a seek and a table row
# (three times cheaper: a combination of criteria costs about its driving criterion alone).
_PROBE = {
    "token": "code, system",
    "string": "text",
    "date": "low, high",
    "number": "low, high",
    "quantity": "low, high, code, system",
    "reference": "ref_id, ref_type",
    "uri": "uri",
    "special": "low, high",
}


def probe_index(table: str) -> str:
    return f"{table}_rp"


SCHEMA: list[str] = []
for _kind, _cols in _TABLE_DDL.items():
    _t = KINDS[_kind].TABLE
    SCHEMA.append(f"CREATE TABLE IF NOT EXISTS {_t} (rid INTEGER NOT NULL, param TEXT NOT NULL, {_cols}, grp INTEGER)")
    # Databases made before it have the narrower (rid, param) one: replaced once, on opening.
    SCHEMA.append(f"DROP INDEX IF EXISTS {_t}_rid")
    SCHEMA.append(f"CREATE INDEX IF NOT EXISTS {probe_index(_t)} ON {_t}(rid, param, {_PROBE[_kind]})")
    # Databases made before the covering indexes have the narrower ones under these names.
    SCHEMA.extend(f"DROP INDEX IF EXISTS {_t}_{_i}" for _i in range(3))
    for _i, _ix in enumerate(_INDEXES[_kind]):
        SCHEMA.append(f"CREATE INDEX IF NOT EXISTS {_t}_c{_i} ON {_t}({_ix})")

# A covering index for the type/deleted/visibility checks of rid sets: the resource rows hold the JSON
# bodies, so reading them row by row for thousands of candidate rids costs ten times more than this
# index. Databases made before owners have the narrower (rid, type, deleted) one.
VIS_INDEX = "resource_rid_vis"
SCHEMA.append("DROP INDEX IF EXISTS resource_rid_type")
SCHEMA.append(f"CREATE INDEX IF NOT EXISTS {VIS_INDEX} ON resource(rid, type, deleted, owner, id)")
# Grants: probed per resource by (grantee, type, id), replaced per basis.
SCHEMA.append("""CREATE TABLE IF NOT EXISTS access_grant (
    basis TEXT NOT NULL, grantee TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL, until TEXT)""")
SCHEMA.append("CREATE INDEX IF NOT EXISTS access_grant_target ON access_grant(grantee, type, id, until)")
SCHEMA.append("CREATE INDEX IF NOT EXISTS access_grant_basis ON access_grant(basis)")

_INSERT = {
    kind: (f"INSERT INTO {KINDS[kind].TABLE}(rid, param, {', '.join(KINDS[kind].COLUMNS)}, grp) "
           f"VALUES ({', '.join('?' * (len(KINDS[kind].COLUMNS) + 3))})", KINDS[kind].COLUMNS)
    for kind in KINDS
}


def key(type: str, code: str) -> str:
    return f"{type}.{code}"


def write_index(conn: sqlite3.Connection, rid: int, type: str, entries: Sequence[IndexEntry]) -> None:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for e in entries:
        cols = _INSERT[e.kind][1]
        rows.setdefault(e.kind, []).append(
            (rid, f"{type}.{e.param}", *[getattr(e, c) for c in cols], e.group))
    for kind, batch in rows.items():
        conn.executemany(_INSERT[kind][0], batch)


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    for kind in KINDS.values():
        conn.execute(f"DELETE FROM {kind.TABLE} WHERE rid = ?", (rid,))


# -- visibility -----------------------------------------------------------------------------------


def _marks(n: int) -> str:
    return ",".join("?" * n)


def visible(vis: Visibility, row: str, types: Sequence[str] | None = None) -> tuple[str, list[Any]] | None:
    """The visibility predicate on resource (or history) row ``row`` (columns owner, type, id), or None
    when it always holds. ``types``: the types the row is known to be one of (folds the type tests).

    With readable types (``vis.types``) it is ``row.type IN (readable) AND (owned OR shared OR granted)``,
    the type test left out when every known type is readable and "0" when none is."""
    if vis.types is None:
        return _reach(vis, row, types)
    known = sorted(set(types)) if types else None
    readable = [t for t in known if t in vis.types] if known is not None else sorted(vis.types)
    if not readable:
        return "0", []
    # Below, the row is known to be of a readable type: the reach test folds with that knowledge.
    reach = _reach(vis, row, readable)
    if known is not None and len(readable) == len(known):
        return reach
    cond, args = f"{row}.type IN ({_marks(len(readable))})", list(readable)
    if reach is None:
        return cond, args
    return f"({cond} AND {reach[0]})", [*args, *reach[1]]


def _reach(vis: Visibility, row: str, types: Sequence[str] | None = None) -> tuple[str, list[Any]] | None:
    """Owned, shared or granted (the predicate of :func:`visible` without the readable types)."""
    shared = sorted(vis.shared_types)
    if types is not None and types and all(t in vis.shared_types for t in types):
        return None
    parts: list[str] = []
    args: list[Any] = []
    insts = sorted(vis.institutions)
    if insts:
        parts.append(f"{row}.owner IN ({_marks(len(insts))})")
        args.extend(insts)
    if shared and (types is None or not types or any(t in vis.shared_types for t in types)):
        parts.append(f"{row}.type IN ({_marks(len(shared))})")
        args.extend(shared)
    if insts:
        parts.append(f"EXISTS (SELECT 1 FROM access_grant g INDEXED BY access_grant_target WHERE g.grantee "
                     f"IN ({_marks(len(insts))}) AND g.type = {row}.type AND g.id = {row}.id "
                     f"AND (g.until IS NULL OR g.until > ?))")
        args.extend([*insts, vis.at])
    if not parts:
        return "0", []
    return "(" + " OR ".join(parts) + ")", args


def visible_rid(vis: Visibility, rid: str, types: Sequence[str] | None = None) -> tuple[str, list[Any]] | None:
    """Visibility of the resource whose rid is the expression ``rid``, through the covering index."""
    cond = visible(vis, "v", types)
    if cond is None:
        return None
    return (f"EXISTS (SELECT 1 FROM resource v INDEXED BY {VIS_INDEX} WHERE v.rid = {rid} AND {cond[0]})",
            cond[1])


def granted(conn: sqlite3.Connection, vis: Visibility, type: str, id: str) -> bool:
    insts = sorted(vis.institutions)
    if not insts:
        return False
    return conn.execute(
        f"SELECT 1 FROM access_grant INDEXED BY access_grant_target WHERE grantee IN ({_marks(len(insts))}) "
        "AND type = ? AND id = ? AND (until IS NULL OR until > ?) LIMIT 1", [*insts, type, id, vis.at],
    ).fetchone() is not None


def replace_grants(conn: sqlite3.Connection, basis: str, grants: Sequence[Grant]) -> None:
    conn.execute("DELETE FROM access_grant WHERE basis = ?", (basis,))
    conn.executemany("INSERT INTO access_grant(basis, grantee, type, id, until) VALUES (?,?,?,?,?)",
                     [(basis, g.grantee, g.type, g.id, g.until) for g in grants])


# -- compilation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rows:
    """The rows of one index table that a parameter criterion selects: ``kcond`` on the parameter key,
    ``cond`` (OR of its values; "" for any row of the key). ``negate``: the criterion matches resources
    without such rows (``:not``, ``:missing=true``)."""

    table: str
    alias: str
    kcond: str
    kargs: list[Any]
    cond: str
    cargs: list[Any]
    negate: bool

    @property
    def where(self) -> str:
        return f"{self.kcond} AND ({self.cond})" if self.cond else self.kcond

    @property
    def args(self) -> list[Any]:
        return [*self.kargs, *self.cargs]


class _Compiler:
    def __init__(self, vis: Visibility | None = None) -> None:
        self._n = count()
        self.vis = vis

    def visible(self, row: str, types: Sequence[str]) -> tuple[str, list[Any]]:
        """`` AND <visibility of row>`` and its args ("" when there is no visibility or it always holds)."""
        cond = None if self.vis is None else visible(self.vis, row, types)
        return ("", []) if cond is None else (f" AND {cond[0]}", cond[1])

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self._n)}"

    @staticmethod
    def _keys(types: Sequence[str], code: str, col: str) -> tuple[str, list[Any]]:
        if len(types) == 1:
            return f"{col} = ?", [key(types[0], code)]
        return f"{col} IN ({','.join('?' * len(types))})", [key(t, code) for t in types]

    def criterion(self, c: Criterion, types: Sequence[str], row: str) -> tuple[str, list[Any]]:
        if isinstance(c, Param):
            return self.param(c, types, row)
        if isinstance(c, IdIn):
            if c.type is not None:  # ids of one type only (a system-level _list)
                if c.type not in types:
                    return ("1" if c.negate else "0"), []
                types = (c.type,)
            # Through the (type, id) unique index, as a rid set like every other criterion.
            op = "NOT IN" if c.negate else "IN"
            x = self.alias("x")
            tcond, targs = (f"{x}.type = ?", [types[0]]) if len(types) == 1 else (
                f"{x}.type IN ({','.join('?' * len(types))})", list(types))
            return (f"{row}.rid {op} (SELECT {x}.rid FROM resource {x} WHERE {tcond} "
                    f"AND {x}.id IN ({','.join('?' * len(c.ids))}))", [*targs, *c.ids])
        if isinstance(c, AnyOf):
            if not c.criteria:
                return "0", []
            parts = [self.criterion(x, types, row) for x in c.criteria]
            return "(" + " OR ".join(f"({p})" for p, _ in parts) + ")", [a for _, args in parts for a in args]
        if isinstance(c, AllOf | Not):
            return self.boolean(c, types, row)
        if isinstance(c, Chain):
            return self.chain(c, types, row)
        if isinstance(c, Has):
            return self.has(c, types, row)
        raise TypeError(f"Unknown criterion {c!r}")

    def boolean(self, c: AllOf | Not, types: Sequence[str], row: str) -> tuple[str, list[Any]]:
        """``and`` / ``not`` of a ``_filter`` (search_filter.html). Every criterion compiles to a two-valued
        predicate on ``row`` (``rid IN (...)``, ``EXISTS``: never NULL), so ``NOT`` is the complement among
        the rows the enclosing query selects (live, of the type, visible)."""
        if isinstance(c, Not):
            inner, args = self.criterion(c.criterion, types, row)
            return f"NOT ({inner})", args
        if not c.criteria:
            return "1", []
        parts = [self.criterion(x, types, row) for x in c.criteria]
        return "(" + " AND ".join(f"({p})" for p, _ in parts) + ")", [a for _, args in parts for a in args]

    def rows(self, p: Param, types: Sequence[str], t: str | None = None) -> _Rows | str:
        """The index rows of a (non-composite) parameter criterion, or "0"/"1" when it is constant."""
        kind = KINDS[p.type]
        t = t or self.alias("t")
        kcond, kargs = self._keys(types, p.code, f"{t}.param")
        if p.modifier == "missing":
            v = p.values[0]
            assert isinstance(v, MissingValue)
            return _Rows(kind.TABLE, t, kcond, kargs, "", [], v.missing)
        if not p.values:
            return "1" if p.modifier == "not" else "0"
        ors: list[str] = []
        args: list[Any] = []
        for v in p.values:
            cond, vargs = kind.sql(v, p.modifier, t)
            ors.append(f"({cond})" if cond else "1")
            args.extend(vargs)
        return _Rows(kind.TABLE, t, kcond, kargs, _any(ors), args, p.modifier == "not")

    def param(self, p: Param, types: Sequence[str], row: str, correlated: bool = False) -> tuple[str, list[Any]]:
        if p.type == "composite":
            return self.composite(p, types, row)
        rows = self.rows(p, types)
        if isinstance(rows, str):
            return rows, []
        op = "NOT IN" if rows.negate else "IN"
        if correlated and not rows.negate:
            # Probed per row through the per-row (rid, param, ...) index: for a criterion checked against a few
            # rows, instead of materialising its whole rid set. INDEXED BY: SQLite otherwise may take a
            # (param, value) index and scan every row of the value per probe (seconds on 100,000 rows).
            return (f"EXISTS (SELECT 1 FROM {rows.table} {rows.alias} INDEXED BY {probe_index(rows.table)} "
                    f"WHERE {rows.alias}.rid = {row}.rid AND {rows.where})", rows.args)
        return f"{row}.rid {op} (SELECT {rows.alias}.rid FROM {rows.table} {rows.alias} WHERE {rows.where})", rows.args

    def composite(self, p: Param, types: Sequence[str], row: str) -> tuple[str, list[Any]]:
        subs: list[str] = []
        args: list[Any] = []
        for v in p.values:
            assert isinstance(v, CompositeValue)
            aliases = [self.alias("c") for _ in p.components]
            joins: list[str] = []
            conds: list[str] = []
            jargs: list[Any] = []
            wargs: list[Any] = []
            for i, (kind_name, part) in enumerate(zip(p.components, v.parts, strict=True)):
                kind = KINDS[kind_name]
                a = aliases[i]
                kcond, kargs = self._keys(types, f"{p.code}${i}", f"{a}.param")
                cond, cargs = kind.sql(part, None, a)
                if i == 0:
                    joins.append(f"{kind.TABLE} {a}")
                    conds.append(kcond)
                    wargs.extend(kargs)
                else:
                    joins.append(f"JOIN {kind.TABLE} {a} ON {a}.rid = {aliases[0]}.rid AND {a}.grp = {aliases[0]}.grp "
                                 f"AND {kcond}")
                    jargs.extend(kargs)
                conds.append(f"({cond})")
                wargs.extend(cargs)
            subs.append(f"SELECT {aliases[0]}.rid FROM {' '.join(joins)} WHERE {' AND '.join(conds)}")
            args.extend(jargs + wargs)
        if not subs:
            return "0", []
        return f"{row}.rid IN ({' UNION '.join(subs)})", args

    def chain(self, c: Chain, types: Sequence[str], row: str) -> tuple[str, list[Any]]:
        sub, args = self.chain_rids(c, types)
        return ("0", []) if sub is None else (f"{row}.rid IN ({sub})", args)

    def chain_rids(self, c: Chain, types: Sequence[str]) -> tuple[str | None, list[Any]]:
        """``SELECT rid ...`` of the resources whose reference ``c.code`` points at a (visible) target
        that matches the chained criterion: rows of the reference index, so current resources of the
        searched types. None when no target type is possible."""
        subs: list[str] = []
        args: list[Any] = []
        for target in c.target_types:
            ref, tg = self.alias("ref"), self.alias("tg")
            kcond, kargs = self._keys(types, c.code, f"{ref}.param")
            inner, iargs = self.criterion(c.criterion, [target], tg)
            vcond, vargs = self.visible(tg, [target])  # never through a target the caller cannot see
            # From the (usually selective) targets to the references pointing at them; CROSS JOIN
            # fixes that order, which SQLite's planner otherwise reverses (a scan of all references).
            subs.append(f"SELECT {ref}.rid FROM resource {tg} CROSS JOIN {KINDS['reference'].TABLE} {ref} "
                        f"ON {kcond} AND {ref}.ref_id = {tg}.id AND {ref}.ref_type = {tg}.type "
                        f"WHERE {inner} AND +{tg}.type = ? AND +{tg}.deleted = 0{vcond}")
            args.extend([*kargs, *iargs, target, *vargs])
        if not subs:
            return None, []
        return " UNION ".join(subs), args

    def has(self, c: Has, types: Sequence[str], row: str) -> tuple[str, list[Any]]:
        ref, src, tg = self.alias("ref"), self.alias("src"), self.alias("tg")
        inner, iargs = self.criterion(c.criterion, [c.type], src)
        vcond, vargs = self.visible(src, [c.type])  # never through a source the caller cannot see
        # INDEXED BY: the covering (param, ...) index looks cheaper to SQLite without statistics, but
        # it scans every reference of the parameter per source row.
        table = KINDS["reference"].TABLE
        sub = (f"SELECT {tg}.rid FROM resource {src} CROSS JOIN {table} {ref} INDEXED BY {probe_index(table)} "
               f"ON {ref}.rid = {src}.rid AND {ref}.param = ? "
               f"CROSS JOIN resource {tg} ON {tg}.type = {ref}.ref_type AND {tg}.id = {ref}.ref_id "
               f"WHERE {inner} AND +{src}.deleted = 0{vcond}")
        return f"{row}.rid IN ({sub})", [key(c.type, c.code), *iargs, *vargs]


def _any(ors: list[str]) -> str:
    """The OR of ``ors`` as a balanced tree: a flat chain of a thousand ORs (an ``:in`` ValueSet
    expanded) is as deep as it is long, past SQLite's expression depth limit of 1000."""
    if len(ors) <= 16:
        return " OR ".join(ors)
    mid = len(ors) // 2
    return f"({_any(ors[:mid])}) OR ({_any(ors[mid:])})"


def where_clause(query: SearchQuery) -> tuple[str, list[Any]]:
    # With criteria, the unary "+" keeps SQLite from driving the query by the type index (a scan of
    # every resource of the type): the criteria's rid sets drive it, the type is only checked.
    plus = "+" if query.params else ""
    where = [f"{plus}r.deleted = 0"]
    args: list[Any] = []
    types: list[str]
    if query.type:
        types = [query.type]
        where.append(f"{plus}r.type = ?")
        args.append(query.type)
    else:
        types = list(query.types)
        if types:
            where.append(f"{plus}r.type IN ({','.join('?' * len(types))})")
            args.extend(types)
    comp = _Compiler(query.visibility)
    for c in query.params:
        cond, cargs = comp.criterion(c, types, "r")
        where.append(cond)
        args.extend(cargs)
    vis = None if query.visibility is None else visible(query.visibility, "r", types)
    if vis is not None:
        where.append(vis[0])
        args.extend(vis[1])
    return " AND ".join(where), args


# Without a connection to sample (:func:`index_source` called alone), which criterion drives an
# index-only query: equalities are usually far more selective than prefixes, and those than ranges
# (dates, numbers) or ``:missing=false``.
_DRIVE_RANK = {"reference": 0, "token": 0, "uri": 0, "string": 1}
# Caps of the sampled counts of the candidate driving criteria, a factor 4 apart (see _estimates).
SAMPLE_CAPS = (32, 128, 512, 2048, 8192, 32768)


@dataclass(frozen=True, slots=True)
class _Drive:
    """A candidate driving criterion: ``source`` selects its rows (``SELECT 1 FROM ...``), ``rows`` is
    the exact row count when known without sampling (``_id``)."""

    criterion: Criterion
    source: str
    args: list[Any]
    rows: int | None = None


class Estimates:
    """Sampled counts of broad criteria (at least :attr:`MIN_ROWS` index rows), remembered for
    :attr:`TTL` seconds per store: sampling a broad criterion costs thousands of index rows, and the
    broad ones (a gender, a status, a category) come back in query after query. A count is exact, or a
    lower bound (the cap it reached). A stale count only changes which criterion drives, never the
    results. Narrow criteria are counted each time (they are cheap to count, and matter most)."""

    TTL = 60.0
    MIN_ROWS = 512
    SIZE = 4096

    def __init__(self) -> None:
        self._counts: dict[Any, tuple[float, int, bool]] = {}

    def get(self, key: Any) -> tuple[int, bool] | None:
        """(rows, exact) of a criterion counted less than TTL seconds ago."""
        hit = self._counts.get(key)
        return (hit[1], hit[2]) if hit is not None and time.monotonic() - hit[0] < self.TTL else None

    def put(self, key: Any, rows: int, exact: bool) -> None:
        if rows < self.MIN_ROWS:
            return
        if len(self._counts) >= self.SIZE:
            self._counts.clear()  # simpler than an LRU, and refilled by the next few queries
        self._counts[key] = (time.monotonic(), rows, exact)


def _estimates(conn: sqlite3.Connection, drives: list[_Drive], known: Estimates | None = None,
               types: Sequence[str] = ()) -> list[int]:
    """How many index rows each candidate selects, exact for the smallest (the statistics of the
    plan, sampled at query time: always current, nothing to maintain on write).

    The candidates not known exactly are counted up to a cap, in one statement; the cap grows by 4
    until one of them stays below it (that one is exact, the others at the cap are larger), and never
    past the smallest exact count already known (an ``_id`` list, a remembered count), since counting
    further decides nothing. So a broad criterion costs at most a few times the rows of the most
    selective one, never a scan of all its rows; one remembered at least as large as the cap is not
    counted at all. All at the last cap: the caller falls back to the rank heuristic."""
    if len(drives) == 1:
        return [0]  # nothing to choose between
    keys = [(d.criterion, tuple(types)) for d in drives]
    exact: dict[int, int] = {}
    floor: dict[int, int] = {}  # lower bounds
    for i, d in enumerate(drives):
        hit = (d.rows, True) if d.rows is not None else None if known is None else known.get(keys[i])
        if hit is not None:
            (exact if hit[1] else floor)[i] = hit[0]
    for level in SAMPLE_CAPS:
        cap = min(level, *exact.values()) if exact else level
        need = [i for i in range(len(drives)) if i not in exact and floor.get(i, 0) < cap]
        if need:
            sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM ({drives[i].source} LIMIT {cap}))" for i in need)
            row = conn.execute(sql, [a for i in need for a in drives[i].args]).fetchone()
            for i, n in zip(need, row, strict=True):
                (exact if n < cap else floor)[i] = n
                if known is not None:
                    known.put(keys[i], n, n < cap)
        # Every candidate not known exactly has at least ``cap`` rows now.
        if exact and min(exact.values()) <= cap:
            break
    return [exact[i] if i in exact else floor.get(i, SAMPLE_CAPS[-1]) for i in range(len(drives))]


def index_source(query: SearchQuery, conn: sqlite3.Connection | None = None, known: Estimates | None = None,
                 ) -> tuple[str, list[Any]] | None:
    """``FROM ... WHERE ...`` of the matches as rows ``r`` (one per rid) read from the index tables
    alone, or None when the query has no positive parameter or ``_id`` criterion to drive it.

    Index rows exist only for current, non-deleted versions, and their key ``Type.code`` names the
    type, so the rids of a positive criterion need no check against ``resource``: counts and pages
    come from the covering value indexes. The driving criterion is the most selective one, by counts
    sampled on ``conn`` (:func:`_estimates`); the other criteria are probed per driving rid through the
    per-row ``(rid, param, ...)`` indexes, so a query costs about what its most selective criterion costs alone.
    Without ``conn``, the most selective-looking parameter drives (:data:`_DRIVE_RANK`), several
    criteria on it (``date=ge..&date=lt..``) in one pass over its rows grouped by rid."""
    if any(s.type == "special" for s in query.sort):
        return None  # _id / _lastUpdated sort values are read from the resource rows
    types = [query.type] if query.type else list(query.types)
    comp = _Compiler(query.visibility)
    positive = [c for c in query.params if isinstance(c, Param) and c.type != "composite"
                and isinstance(r := comp.rows(c, types), _Rows) and not r.negate]
    ids = [c for c in query.params if isinstance(c, IdIn) and not c.negate]
    # A chain's rids come from the reference index alone (current resources of the type), so it can
    # drive too: `subject:Patient.identifier=...` reads a few reference rows, never the resource rows.
    chains = [c for c in query.params if isinstance(c, Chain)] if conn is not None else []
    if not types or not (positive or ((ids or chains) and conn is not None)):
        return None
    a = comp.alias("d")
    group: list[Criterion]
    if conn is None:
        lead: Criterion = min(positive, key=lambda c: _DRIVE_RANK.get(c.type, 2) + 3 * (c.modifier == "missing"))
        assert isinstance(lead, Param)
        group = [c for c in positive if (c.type, c.code) == (lead.type, lead.code)]
    else:
        drives = [_id_drive(c, types) for c in ids]
        for ch in chains:
            sub, sargs = comp.chain_rids(ch, types)
            if sub is not None:
                drives.append(_Drive(ch, f"SELECT 1 FROM ({sub})", sargs))
        for p in positive:
            r = comp.rows(p, types)
            assert isinstance(r, _Rows)
            drives.append(_Drive(p, f"SELECT 1 FROM {r.table} {r.alias} WHERE {r.where}", r.args))
        counts = _estimates(conn, drives, known, types)
        ranked = sorted(range(len(drives)), key=lambda i: (
            counts[i], _DRIVE_RANK.get(getattr(drives[i].criterion, "type", "token"), 2)))
        lead = drives[ranked[0]].criterion
        group = [lead]
    if isinstance(lead, Chain):
        sub, sargs = comp.chain_rids(lead, types)
        assert sub is not None
        drive = f"SELECT DISTINCT {a}.rid AS rid FROM ({sub}) {a}"
        args: list[Any] = list(sargs)
    elif isinstance(lead, IdIn):
        drive = (f"SELECT {a}.rid AS rid FROM resource {a} WHERE {a}.type IN ({_marks(len(types))}) "
                 f"AND {a}.id IN ({_marks(len(lead.ids))}) AND {a}.deleted = 0")
        args = [*types, *lead.ids]
    else:
        rows = [comp.rows(c, types, a) for c in group if isinstance(c, Param)]
        assert all(isinstance(r, _Rows) for r in rows)
        conds = [f"({r.cond or 1})" for r in rows if isinstance(r, _Rows)]
        cargs = [x for r in rows if isinstance(r, _Rows) for x in r.cargs]
        first = rows[0]
        assert isinstance(first, _Rows)
        if len(rows) == 1:
            drive = f"SELECT {a}.rid AS rid FROM {first.table} {a} WHERE {first.where} GROUP BY {a}.rid"
            args = first.args
        else:
            drive = (f"SELECT {a}.rid AS rid FROM {first.table} {a} WHERE {first.kcond} AND ({' OR '.join(conds)}) "
                     f"GROUP BY {a}.rid HAVING {' AND '.join(f'max{c}' for c in conds)}")
            args = [*first.kargs, *cargs, *cargs]
    where: list[str] = []
    for c in query.params:
        if any(c is g for g in group):
            continue
        cond, more = (comp.param(c, types, "r", correlated=True) if isinstance(c, Param)
                      else comp.criterion(c, types, "r"))
        where.append(cond)
        args.extend(more)
    # The driving rids have no resource row here: their visibility is probed through the covering index.
    vis = None if query.visibility is None else visible_rid(query.visibility, "r.rid", types)
    if vis is not None:
        where.append(vis[0])
        args.extend(vis[1])
    return f"({drive}) r WHERE {' AND '.join(where) or '1'}", args


def _id_drive(c: IdIn, types: Sequence[str]) -> _Drive:
    # At most one resource per (type, id): the count is known without sampling.
    return _Drive(c, "", [], len(set(c.ids)) * len(types))


def _order(query: SearchQuery) -> tuple[list[str], list[Any], str]:
    """(sort value expressions over ``r``, their args, ORDER BY over the derived columns s0, s1...)."""
    if not query.sort:
        return [], [], "rid"
    types = [query.type] if query.type else list(query.types)
    exprs: list[str] = []
    args: list[Any] = []
    order: list[str] = []
    for i, s in enumerate(query.sort):
        direction = "DESC" if s.descending else "ASC"
        if s.code == "_lastUpdated":
            exprs.append("r.last_updated")
        elif s.code == "_id":
            exprs.append("r.id")
        else:
            kind = KINDS[s.type]
            agg = "MAX" if s.descending else "MIN"
            kcond, kargs = _Compiler._keys(types, s.code, "s.param")
            # INDEXED BY: without statistics SQLite prefers the (param, value) index here, a scan per row.
            exprs.append(f"(SELECT {agg}(s.{kind.SORT_COLUMN}) FROM {kind.TABLE} s "
                         f"INDEXED BY {probe_index(kind.TABLE)} WHERE s.rid = r.rid AND {kcond})")
            args.extend(kargs)
        order.append(f"s{i} IS NULL, s{i} {direction}")
    order.append("rid")
    return exprs, args, ", ".join(order)


STREAM_THRESHOLD = 2000


def _walk_sorted(conn: sqlite3.Connection, query: SearchQuery) -> list[int] | None:
    """One page of a large result sorted by one parameter, without computing the match set: walk that
    parameter's index in order (its rows are current resources of the searched types), the criteria
    checked per row in the same statement (parameter criteria probed through the per-row index), and
    keep the first appearance of each match, stopping once the page is full (the statement is stepped
    lazily: it reads only the rows up to there). None when the index ends first (some matches have no
    value for the key: they come last, in rid order), and the caller takes the match-set route.

    The walk costs a probe per row read: about ``need`` rows over the fraction of rows that match, and
    a result comes here only when it is large (over STREAM_THRESHOLD matches)."""
    s = query.sort[0]
    kind = KINDS[s.type]
    types = [query.type] if query.type else list(query.types)
    comp = _Compiler(query.visibility)
    kcond, args = _Compiler._keys(types, s.code, "s.param")
    conds: list[str] = []
    for c in query.params:
        cond, cargs = (comp.param(c, types, "s", correlated=True) if isinstance(c, Param)
                       else comp.criterion(c, types, "s"))
        conds.append(f"({cond})")
        args.extend(cargs)
    vis = None if query.visibility is None else visible_rid(query.visibility, "s.rid", types)
    if vis is not None:
        conds.append(f"({vis[0]})")
        args.extend(vis[1])
    col = f"s.{kind.SORT_COLUMN}"
    need = query.offset + query.count
    ordered: list[int] = []
    seen: set[int] = set()
    cur = conn.execute(f"SELECT s.rid FROM {kind.TABLE} s WHERE {kcond} AND {col} IS NOT NULL"
                       f"{''.join(' AND ' + c for c in conds)} ORDER BY {col} {'DESC' if s.descending else 'ASC'}, "
                       f"s.rid", args)
    while rows := cur.fetchmany(64):
        for (rid,) in rows:
            if rid not in seen:
                seen.add(rid)
                ordered.append(rid)
                if len(ordered) >= need:
                    return ordered[query.offset :]
    return None


def _stream_sorted(conn: sqlite3.Connection, query: SearchQuery, matched: set[int]) -> list[int]:
    """One page of a large result sorted by one parameter: walk that parameter's index in order and
    keep the first appearance of each matching rid (its MIN, or MAX when descending), stopping once
    the page is full, instead of computing a sort value for every match."""
    s = query.sort[0]
    kind = KINDS[s.type]
    types = [query.type] if query.type else list(query.types)
    kcond, kargs = _Compiler._keys(types, s.code, "s.param")
    col = f"s.{kind.SORT_COLUMN}"
    need = query.offset + query.count
    ordered: list[int] = []
    seen: set[int] = set()
    cur = conn.execute(f"SELECT s.rid FROM {kind.TABLE} s WHERE {kcond} AND {col} IS NOT NULL "
                       f"ORDER BY {col} {'DESC' if s.descending else 'ASC'}, s.rid", kargs)
    for (rid,) in cur:
        if rid in matched and rid not in seen:
            seen.add(rid)
            ordered.append(rid)
            if len(ordered) >= need:
                break
    else:
        ordered.extend(sorted(matched - seen))  # no value for the key: last, in rid order
    return ordered[query.offset : need]


def execute(conn: sqlite3.Connection, query: SearchQuery, estimates: Estimates | None = None,
            ) -> tuple[list[int], int | None]:
    """The rids of the matching current resources (one page, in order) and the total."""
    vis = query.visibility
    known = [query.type] if query.type else list(query.types)
    if vis is not None and vis.types is not None and known and not any(vis.readable(t) for t in known):
        return [], None if query.total == "none" else 0  # no searched type is readable (the SQL says "0")
    source = index_source(query, conn, estimates)
    if source is None:
        where, args = where_clause(query)
        source = (f"resource r WHERE {where}", args)
    src, args = source
    total: int | None = None
    if query.total != "none":
        total = conn.execute(f"SELECT count(*) FROM {src}", args).fetchone()[0]
        if total == 0 or query.count == 0:
            return [], total
    if len(query.sort) == 1 and query.sort[0].type != "special" and query.count > 0:
        # Large results sorted by one parameter are paged by walking its index (see _stream_sorted).
        size = total if total is not None else conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {src} LIMIT ?)", [*args, STREAM_THRESHOLD + 1]).fetchone()[0]
        if size > STREAM_THRESHOLD:
            page = _walk_sorted(conn, query)
            if page is not None:
                return page, total
            matched = {r[0] for r in conn.execute(f"SELECT r.rid FROM {src}", args)}
            return _stream_sorted(conn, query, matched), total
    exprs, oargs, order = _order(query)
    if exprs:
        # Each sort value is computed once per matching row, in a derived table.
        cols = ", ".join(f"{e} AS s{i}" for i, e in enumerate(exprs))
        sql = f"SELECT rid FROM (SELECT r.rid AS rid, {cols} FROM {src}) ORDER BY {order} LIMIT ? OFFSET ?"
        params = [*oargs, *args, query.count, query.offset]
    else:
        sql = f"SELECT r.rid FROM {src} ORDER BY r.rid LIMIT ? OFFSET ?"
        params = [*args, query.count, query.offset]
    return [r[0] for r in conn.execute(sql, params).fetchall()], total


# -- _include / _revinclude ---------------------------------------------------------------------


def _in_list(rids: Sequence[int]) -> str:
    # rids are integers from our own rows: inlined, as SQLite limits bound parameters
    return ",".join(str(int(r)) for r in rids)


def _apply(conn: sqlite3.Connection, inc: Include, rev: bool, rids: Sequence[int], vis: Visibility | None,
           ) -> list[int]:
    ref_table = KINDS["reference"].TABLE
    args: list[Any] = [key(inc.source_type, inc.code)]
    if not rev:
        sql = (f"SELECT DISTINCT tg.rid FROM {ref_table} ref JOIN resource tg ON tg.type = ref.ref_type "
               f"AND tg.id = ref.ref_id WHERE ref.rid IN ({_in_list(rids)}) AND ref.param = ? AND tg.deleted = 0")
        if inc.target_type:
            sql += " AND tg.type = ?"
            args.append(inc.target_type)
        cond = None if vis is None else visible(vis, "tg", [inc.target_type] if inc.target_type else None)
    else:
        sql = (f"SELECT DISTINCT ref.rid FROM resource m JOIN {ref_table} ref ON ref.param = ? "
               f"AND ref.ref_id = m.id AND ref.ref_type = m.type WHERE m.rid IN ({_in_list(rids)})")
        if inc.target_type:
            sql += " AND m.type = ?"
            args.append(inc.target_type)
        cond = None if vis is None else visible_rid(vis, "ref.rid", [inc.source_type])
    if cond is not None:
        sql += f" AND {cond[0]}"
        args.extend(cond[1])
    return [r[0] for r in conn.execute(sql, args)]


MAX_ITERATIONS = include_loop.MAX_ITERATIONS


def includes(conn: sqlite3.Connection, query: SearchQuery, rids: Sequence[int]) -> list[int]:
    """The rids included by ``_include``/``_revinclude`` for the page ``rids`` (in rid order, without
    the matches); ``:iterate`` ones are applied again to what they include, up to a fixed depth
    (:mod:`fhir_exchange.search.includes`). Resources the query's visibility hides are never included."""

    def lookup(specs: list[include_loop.Spec], frontier: list[int]) -> list[int]:
        return [rid for inc, rev in specs for rid in _apply(conn, inc, rev, frontier, query.visibility)]

    return include_loop.run(lookup, query.include, query.revinclude, rids, int)
