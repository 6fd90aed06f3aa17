"""Visibility in SQL: the caller's :class:`fhir_exchange.search.query.Visibility` as a predicate on a
resource (or history) row, and the grants it reads (``access_grant``, replaced per basis).

:func:`visible` is ``owner IN (institutions) OR type IN (shared types) OR EXISTS (a grant to one of
the institutions on (type, id) whose until is NULL or later than at)``, ANDed with ``type IN (readable
types)`` when the caller's types are limited (its scopes); constant parts are folded (a type known to
be shared and readable needs no predicate at all, a type known to be unreadable is "0"). The search
compiler puts it into every subquery that reads resources; where rows come from the index tables
alone, :func:`visible_rid` probes it per rid through ``resource_rid_vis``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhir_exchange.search.query import Visibility
from fhir_exchange.store.port import Grant
from fhir_exchange.store.sqlite_index import VIS_INDEX


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
