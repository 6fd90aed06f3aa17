"""The SQLite store's records beside the resources: internal records and message records.

Internal records (:class:`~fhir_exchange.store.port.Record`: registered clients, institutions, the token
secret, used assertion ids) are rows of ``record`` keyed by (kind, key), outside the FHIR namespace,
each with an optional expiry. A record write is a single statement run as a unit of work of its own
(``SqliteStore._record_write``: a record written while a unit is open waits for it, and never commits or
rolls back with it). ``put(if_absent=True)`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires
<= now``: SQLite's write lock makes it atomic across processes, and its change count says whether it
wrote.

Message records (:class:`~fhir_exchange.store.port.MessageRecord`) are the stored answers to FHIR
messages, rows of ``message`` written in the unit of work that processes the message. Grants
(``access_grant``) are :mod:`fhir_exchange.store.sqlite_search`'s, which compiles visibility from them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_exchange.store.port import MessageRecord, Record, VersionConflict

_UNEXPIRED = "(expires IS NULL OR expires > ?)"

DELETE = "DELETE FROM record WHERE kind=? AND key=?"
PURGE = "DELETE FROM record WHERE expires <= ?"


def _record(r: tuple[Any, ...]) -> Record:
    return Record(r[0], r[1], bytes(r[2]), r[3])


def get(conn: sqlite3.Connection, kind: str, key: str, now: str) -> Record | None:
    r = conn.execute(f"SELECT kind, key, value, expires FROM record WHERE kind=? AND key=? AND {_UNEXPIRED}",
                     (kind, key, now)).fetchone()
    return None if r is None else _record(r)


def of_kind(conn: sqlite3.Connection, kind: str, now: str) -> list[Record]:
    rows = conn.execute(f"SELECT kind, key, value, expires FROM record WHERE kind=? AND {_UNEXPIRED} "
                        "ORDER BY key", (kind, now))
    return [_record(r) for r in rows]


def put(record: Record, if_absent: bool, now: str) -> tuple[str, list[Any]]:
    """The statement writing ``record`` and its arguments; its change count says whether it wrote."""
    sql = ("INSERT INTO record(kind, key, value, expires) VALUES (?,?,?,?) ON CONFLICT(kind, key) "
           "DO UPDATE SET value=excluded.value, expires=excluded.expires")
    args: list[Any] = [record.kind, record.key, record.value, record.expires]
    if if_absent:  # the existing row is replaced only when it has expired: no change otherwise
        sql += " WHERE record.expires <= ?"
        args.append(now)
    return sql, args


def read_message(conn: sqlite3.Connection, key: str) -> MessageRecord | None:
    r = conn.execute("SELECT key, digest, body FROM message WHERE key=?", (key,)).fetchone()
    return None if r is None else MessageRecord(r[0], r[1], bytes(r[2]))


def write_message(conn: sqlite3.Connection, record: MessageRecord) -> None:
    try:
        conn.execute("INSERT INTO message(key, digest, body) VALUES (?,?,?)", (record.key, record.digest, record.body))
    except sqlite3.IntegrityError:
        raise VersionConflict(f"An answer to message {record.key} is already stored") from None
