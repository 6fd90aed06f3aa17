"""The SQLite search index tables (https://hl7.org/fhir/R4/search.html#table): one table per parameter
type, its columns those the type's module names (:mod:`fhir_exchange.search.params`), each row keyed by
``rid`` (the resource row) and ``param`` = ``Type.code``. Index rows exist only for current,
non-deleted versions: a write replaces them in the same transaction, a delete removes them.

Columns added to a table since it was first made (:data:`ADDED_COLUMNS`: the canonical form of UCUM
quantities) are added to an older database when it is opened (:func:`upgrade`, before the index DDL,
which indexes them), and filled from the rows already there, so that searches in canonical units
find what was stored before without a ``$reindex``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params import KINDS, quantity

_TABLE_DDL = {
    "token": "system TEXT, code TEXT, text TEXT",
    "string": "text TEXT, code TEXT",
    "date": "low INTEGER, high INTEGER",
    "number": "low REAL, high REAL",
    "quantity": "low REAL, high REAL, system TEXT, code TEXT, text TEXT, canon TEXT, canon_low REAL, canon_high REAL",
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
    "quantity": ["param, low, high, rid", "param, canon, canon_low, canon_high, rid"],
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


# (table, column, DDL type) added since the table was first made: added by :func:`upgrade`.
ADDED_COLUMNS = [(quantity.TABLE, "canon", "TEXT"), (quantity.TABLE, "canon_low", "REAL"),
                 (quantity.TABLE, "canon_high", "REAL")]


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older database's index tables to these columns (a database without the tables yet gets
    them from :data:`SCHEMA`), then give UCUM quantities indexed without their canonical form one: from
    the stored value, unit and range, as :func:`quantity.extract` computes it. Run on opening a
    database whose schema version changed, before :data:`SCHEMA`."""
    for table, column, kind in ADDED_COLUMNS:
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if cols and column not in cols:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    if not {r[1] for r in conn.execute(f"PRAGMA table_info({quantity.TABLE})")}:
        return
    rows = conn.execute(f"SELECT rowid, low, high, code FROM {quantity.TABLE} WHERE canon IS NULL AND system = ?",
                        (quantity.UCUM,)).fetchall()
    updates: list[tuple[Any, ...]] = []
    for rowid, low, high, code in rows:
        got = quantity.extract("", ({"low": {"value": low, "system": quantity.UCUM, "code": code},
                                     "high": {"value": high, "system": quantity.UCUM, "code": code}}, "Range"))
        if got and got[0].canon is not None:
            updates.append((got[0].canon, got[0].canon_low, got[0].canon_high, rowid))
    if updates:  # in one transaction (a savepoint starts one, or nests in the caller's)
        conn.execute("SAVEPOINT canonical_quantities")
        conn.executemany(f"UPDATE {quantity.TABLE} SET canon = ?, canon_low = ?, canon_high = ? WHERE rowid = ?",
                         updates)
        conn.execute("RELEASE canonical_quantities")
