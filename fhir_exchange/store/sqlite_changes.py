"""The SQLite store's change feed: one ``change`` row per committed put or delete.

``seq`` is an AUTOINCREMENT key written in the writing transaction. Writers are serialised (one writer
connection, units of work one at a time, a group's units in order inside one transaction), so seq order
is commit order and a reader never sees a lower seq appear after a higher one: :func:`after` can simply
read forward from a cursor. Readers follow it with ``store.changes(after, limit)``
(``interactions/conformance.DefinitionsFeed``).
"""

from __future__ import annotations

import sqlite3

from fhir_exchange.store.port import ChangeRecord, ResourceVersion
from fhir_exchange.store.sqlite_schema import MAX_INT


def record(conn: sqlite3.Connection, version: ResourceVersion, deleted: bool) -> None:
    """The change row of a put or delete, in the transaction that writes it (on the writer connection)."""
    conn.execute("INSERT INTO change(type, id, version, deleted, last_updated) VALUES (?,?,?,?,?)",
                 (version.type, version.id, version.version_id, int(deleted), version.last_updated))


def after(conn: sqlite3.Connection, cursor: int, limit: int) -> list[ChangeRecord]:
    """At most ``limit`` committed changes with ``seq > cursor``, in seq order."""
    rows = conn.execute("SELECT seq, type, id, version, deleted, last_updated FROM change WHERE seq > ? "
                        "ORDER BY seq LIMIT ?", (min(cursor, MAX_INT), min(max(limit, 0), MAX_INT)))
    return [ChangeRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]


def last(conn: sqlite3.Connection) -> int:
    """The newest committed seq (0: none yet)."""
    value: int = conn.execute("SELECT coalesce(max(seq), 0) FROM change").fetchone()[0]
    return value
