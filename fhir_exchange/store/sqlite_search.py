"""SQLite search (https://hl7.org/fhir/R4/search.html): which criterion drives a query, counts, pages,
sorting and includes, over the index tables of :mod:`~fhir_exchange.store.sqlite_index` and the
predicates of :mod:`~fhir_exchange.store.sqlite_compile` and :mod:`~fhir_exchange.store.sqlite_visibility`
(re-exported here: this module is the store's one entry to search).

Every criterion compiles to a predicate over a resource row (``alias.rid IN (SELECT rid FROM
search_x WHERE ...)``), so criteria nest freely: chains join the reference table to the target
resource by (type, id), ``_has`` goes the other way. Without ``_sort`` results come in ``rid`` order
(insertion order: stable, and the same after a restart, so offset paging links stay valid); with
``_sort`` each key is the MIN (ascending) or MAX (descending) of the parameter's values, missing
values last, ``rid`` breaking ties.

Visibility (:mod:`~fhir_exchange.store.sqlite_visibility`) is compiled into every subquery that reads
resources: the match set (so counts, pages and sort walks), chain targets, ``_has`` sources and each
include step; where the rows come from the index tables alone (:func:`index_source`, the sort walk), it
is probed per rid through ``resource_rid_vis``, never the resource row with its JSON body.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_exchange.search import includes as include_loop
from fhir_exchange.search.params import KINDS
from fhir_exchange.search.query import Chain, Criterion, IdIn, Include, Param, SearchQuery, Visibility
from fhir_exchange.store.sqlite_compile import _Compiler, _Rows, where_clause
from fhir_exchange.store.sqlite_index import SCHEMA, delete_index, key, probe_index, upgrade, write_index
from fhir_exchange.store.sqlite_visibility import _marks, granted, replace_grants, visible, visible_rid

__all__ = ["SCHEMA", "Estimates", "delete_index", "execute", "granted", "includes", "index_source", "replace_grants",
           "upgrade", "visible", "visible_rid", "where_clause", "write_index"]


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



def includes(conn: sqlite3.Connection, query: SearchQuery, rids: Sequence[int]) -> list[int]:
    """The rids included by ``_include``/``_revinclude`` for the page ``rids`` (in rid order, without
    the matches); ``:iterate`` ones are applied again to what they include, up to a fixed depth
    (:mod:`fhir_exchange.search.includes`). Resources the query's visibility hides are never included."""

    def lookup(specs: list[include_loop.Spec], frontier: list[int]) -> list[int]:
        return [rid for inc, rev in specs for rid in _apply(conn, inc, rev, frontier, query.visibility)]

    return include_loop.run(lookup, query.include, query.revinclude, rids, int)
