"""The SQLite store's history: reading past versions from the insert-only ``history`` table.

Every put and delete of a unit of work (:mod:`fhir_exchange.store.sqlite_units`) inserts its version,
delete markers included, keyed by (type, id, version); nothing updates or removes a row. A history
page is ordered newest first and pinned with an upper bound on ``last_updated`` (``_till``, carried in
the paging links) so that pages do not shift under writers; ``_at`` picks, per resource, the newest
version not after the instant. Visibility is checked on each version as stored (its own owner), grants
and shared types by (type, id): :func:`fhir_exchange.store.sqlite_search.visible`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.port import HistoryPage, HistoryQuery, ResourceVersion
from fhir_exchange.store.sqlite_schema import COLS, MAX_INT, version_of


def version(conn: sqlite3.Connection, type: str, id: str, version_id: int) -> ResourceVersion | None:
    """One version of a resource (vread), as it was written."""
    r = conn.execute(f"SELECT {COLS}, method FROM history WHERE type=? AND id=? AND version=?",
                     (type, id, version_id)).fetchone()
    return None if r is None else version_of(r, r[7])


def where(query: HistoryQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (empty when none) of a history query over ``history h``, and its arguments."""
    conditions: list[str] = []
    args: list[Any] = []
    if query.type:
        conditions.append("h.type = ?")
        args.append(query.type)
    if query.id:
        conditions.append("h.id = ?")
        args.append(query.id)
    if query.since:
        conditions.append("h.last_updated >= ?")
        args.append(query.since)
    if query.till:
        conditions.append("h.last_updated <= ?")
        args.append(query.till)
    if query.at:
        # Versions current at that instant: the newest version not after it, per resource.
        conditions.append("h.last_updated <= ?")
        args.append(query.at)
        conditions.append(
            "h.version = (SELECT max(h2.version) FROM history h2 WHERE h2.type = h.type "
            "AND h2.id = h.id AND h2.last_updated <= ?)"
        )
        args.append(query.at)
    if query.visibility is not None:
        # Each version as stored (its own owner); grants and shared types by (type, id).
        vis = search_sql.visible(query.visibility, "h", [query.type] if query.type else None)
        if vis is not None:
            conditions.append(vis[0])
            args.extend(vis[1])
    return ("WHERE " + " AND ".join(conditions)) if conditions else "", args


def page(conn: sqlite3.Connection, query: HistoryQuery, sql_where: str, args: list[Any]) -> HistoryPage:
    """One page of ``query`` and the total, in one read transaction (the caller's)."""
    total = conn.execute(f"SELECT count(*) FROM history h {sql_where}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT h.type, h.id, h.version, h.last_updated, h.deleted, h.body, h.owner, h.method FROM history h "
        f"{sql_where} ORDER BY h.last_updated DESC, h.type, h.id, h.version DESC LIMIT ? OFFSET ?",
        [*args, min(query.count, MAX_INT), min(query.offset, MAX_INT)],
    ).fetchall()
    return HistoryPage([version_of(r, r[7]) for r in rows], total)
