"""Compilation of search criteria into SQL predicates over a resource row (https://hl7.org/fhir/R4/search.html).

Every criterion compiles to a predicate over a resource row (``alias.rid IN (SELECT rid FROM
search_x WHERE ...)``), so criteria nest freely: chains join the reference table to the target
resource by (type, id), ``_has`` goes the other way; each parameter type's condition on its index
row is its module's ``sql`` (:mod:`fhir_exchange.search.params`). The visibility of the query is
compiled into every subquery that reads resources (chain targets, ``_has`` sources).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from fhir_exchange.search.params import KINDS
from fhir_exchange.search.query import (
    AllOf,
    AnyOf,
    Chain,
    CompositeValue,
    Criterion,
    Has,
    IdIn,
    MissingValue,
    Not,
    Param,
    SearchQuery,
    Visibility,
)
from fhir_exchange.store.sqlite_index import key, probe_index
from fhir_exchange.store.sqlite_visibility import visible


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
