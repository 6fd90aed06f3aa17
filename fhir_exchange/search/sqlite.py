"""SQLite compilation of search queries and the index tables they run against."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fhir_exchange.search.query import SearchQuery
from fhir_exchange.store.port import IndexEntry

SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS search_token (
        rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT)""",
    "CREATE INDEX IF NOT EXISTS search_token_code ON search_token(param, code, system)",
    "CREATE INDEX IF NOT EXISTS search_token_rid ON search_token(rid)",
]


def write_index(conn: sqlite3.Connection, rid: int, type: str, entries: Sequence[IndexEntry]) -> None:
    conn.executemany(
        "INSERT INTO search_token(rid, param, system, code) VALUES (?, ?, ?, ?)",
        [(rid, e.param, e.system, e.code) for e in entries if e.kind == "token"],
    )


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    conn.execute("DELETE FROM search_token WHERE rid = ?", (rid,))


def execute(conn: sqlite3.Connection, query: SearchQuery) -> tuple[list[int], int | None]:
    """The rids of the matching current resources (one page, in order) and the total."""
    where = ["r.deleted = 0"]
    args: list[object] = []
    if query.type:
        where.append("r.type = ?")
        args.append(query.type)
    for p in query.params:
        if p.code == "_id":
            where.append(f"r.id IN ({','.join('?' * len(p.values))})")
            args.extend(p.values)
        else:
            ors: list[str] = []
            pargs: list[object] = [p.code]
            for v in p.values:
                system, bar, code = v.rpartition("|")
                if bar and system:
                    ors.append("(t.system = ? AND t.code = ?)")
                    pargs.extend([system, code])
                else:
                    ors.append("t.code = ?")
                    pargs.append(code if bar else v)
            where.append(
                "EXISTS (SELECT 1 FROM search_token t WHERE t.rid = r.rid AND t.param = ? "
                f"AND ({' OR '.join(ors)}))"
            )
            args.extend(pargs)
    sql_where = " AND ".join(where)
    total = conn.execute(f"SELECT count(*) FROM resource r WHERE {sql_where}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT r.rid FROM resource r WHERE {sql_where} ORDER BY r.last_updated DESC, r.rid LIMIT ? OFFSET ?",
        [*args, query.count, query.offset],
    ).fetchall()
    return [r[0] for r in rows], total
