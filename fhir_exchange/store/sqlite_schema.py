"""The SQLite store's file: its tables, opening a connection, bringing an older file up to date, and what
SQLite's errors mean to a client.

Tables: ``resource`` (the current version of each resource: ``rid`` integer key, type, id, version,
last_updated, deleted, ``owner`` (the institution it belongs to), body); ``history`` (insert-only, every
version, keyed by type, id, version); ``message`` (stored answers to FHIR messages, keyed by message);
``change`` (the change feed, :mod:`fhir_exchange.store.sqlite_changes`); ``record`` (internal records,
:mod:`fhir_exchange.store.sqlite_records`). The search index tables and ``access_grant`` are
:mod:`fhir_exchange.store.sqlite_search`'s. Opening a database made before a table or column was added
adds it (``ALTER TABLE ... ADD COLUMN owner``, ``CREATE TABLE IF NOT EXISTS``), once: ``PRAGMA
user_version`` records the schema's version.

Errors: :func:`translate` is the one table from ``sqlite3.Error`` to :class:`FhirError` (a busy or
full database is TRANSIENT, 503 with ``Retry-After``); every call into SQLite goes through it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from typing import Any

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.params import near
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.port import ResourceVersion

SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS resource (
        rid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        body BLOB NOT NULL,
        UNIQUE (type, id))""",
    "CREATE INDEX IF NOT EXISTS resource_type_lu ON resource(type, last_updated)",
    """CREATE TABLE IF NOT EXISTS history (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        method TEXT NOT NULL,
        owner TEXT,
        body BLOB NOT NULL,
        PRIMARY KEY (type, id, version)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS history_lu ON history(last_updated)",
    "CREATE INDEX IF NOT EXISTS history_type_lu ON history(type, last_updated)",
    """CREATE TABLE IF NOT EXISTS message (
        key TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        body BLOB NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS change (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        last_updated TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS record (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires TEXT,
        PRIMARY KEY (kind, key)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS record_expires ON record(expires)",
]
# Columns added since the first schema: (table, column, DDL type), added once to older databases.
ADDED_COLUMNS = [("resource", "owner", "TEXT"), ("history", "owner", "TEXT")]

MAX_INT = 2**63 - 1  # LIMIT/OFFSET beyond SQLite's 64-bit integers raise OverflowError

# The columns of a resource or history row, in the order :func:`version_of` reads them.
COLS = "type, id, version, last_updated, deleted, body, owner"


def version_of(r: tuple[Any, ...], method: str = "PUT") -> ResourceVersion:
    return ResourceVersion(r[0], r[1], r[2], r[3], bool(r[4]), bytes(r[5]), method, r[6])


# synchronous in WAL mode: FULL syncs the WAL at every commit, so an acknowledged write survives power
# loss; NORMAL syncs only at checkpoints (faster; the last commits may be lost, the file never corrupts).
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


def connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    # near's exact distance check (search/params/near.py): the matcher's own Python function, so both
    # agree to the last bit; every connection (writer and readers) gets it, in its own thread.
    conn.create_function(near.SQL_FUNCTION, 5, near.within, deterministic=True)
    return conn


def schema_version() -> int:
    """The schema's version: a checksum of the statements that make it, so that whatever a release adds
    (a table, a column, an index) is a new version without anyone keeping count."""
    text = "\n".join([*SCHEMA, *(" ".join(c) for c in ADDED_COLUMNS), *search_sql.SCHEMA])
    return zlib.crc32(text.encode()) & 0x7FFFFFFF or 1


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to this version once; ``PRAGMA user_version`` records it, so a database already
    there is not touched (start-up reads one header field, whatever the database's size)."""
    version = schema_version()
    if conn.execute("PRAGMA user_version").fetchone()[0] == version:
        return
    for ddl in SCHEMA:
        conn.execute(ddl)
    _add_columns(conn)  # before the index DDL, which indexes the added columns
    search_sql.upgrade(conn)  # the same for the search index tables' added columns (and their values)
    for ddl in search_sql.SCHEMA:
        conn.execute(ddl)
    conn.execute(f"PRAGMA user_version={version}")


def _add_columns(conn: sqlite3.Connection) -> None:
    """A database made before a column was added gets it (once: the next open finds it there)."""
    for table, column, kind in ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


# The adapter's logger keeps the name it had when the adapter was one module: operators filter on it.
log = logging.getLogger("fhir_exchange.store.sqlite")
_logged_at: dict[str, float] = {}  # a storage condition's last log line: once a minute, not per request


def _log_once(kind: str, message: str, *args: object) -> None:
    now = time.monotonic()
    if now - _logged_at.get(kind, -120.0) >= 60.0:
        _logged_at[kind] = now
        log.error(message, *args)


def translate(exc: sqlite3.Error) -> FhirError:
    """The port's error for an SQLite error (the one translation table of this adapter)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return FhirError(Category.TRANSIENT, f"The database is busy: {exc}", headers={"Retry-After": "1"})
    if "disk is full" in text or "disk I/O error" in text:
        # Nothing was written (the transaction rolled back); writes work again once there is space.
        _log_once("full", "SQLite cannot write: %s (free disk space; the server resumes by itself)", text)
        return FhirError(Category.TRANSIENT, "The server's storage is full or failing; nothing was written. "
                         "Retry later.", code="transient", headers={"Retry-After": "30"})
    if "unable to open database" in text or "readonly" in text:
        _log_once("open", "SQLite cannot open or write the database file: %s", text)
    return FhirError(Category.FAULT, f"Storage error: {exc}")
