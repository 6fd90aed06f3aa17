"""Schema migrations of the SQLite store run once per schema version (PRAGMA user_version)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhir_exchange.store.sqlite import SqliteStore, schema_version


def user_version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def indexes(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
    finally:
        conn.close()


def drop(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


async def reopen(db: Path) -> None:
    store = SqliteStore(db)
    await store.open()
    await store.close()


async def test_the_schema_is_applied_once_per_version(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    await reopen(db)
    assert user_version(db) == schema_version() != 0
    made = indexes(db)
    assert "history_lu" in made

    # At the current version the schema statements are not run again: a start reads one header field.
    drop(db, "DROP INDEX history_lu")
    await reopen(db)
    assert "history_lu" not in indexes(db)

    # A database of another version (older, or made before versions were recorded) is brought up to date.
    drop(db, "PRAGMA user_version=0")
    await reopen(db)
    assert indexes(db) == made and user_version(db) == schema_version()


async def test_a_database_made_before_the_owner_column_gets_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE resource (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, "
                 "version INTEGER NOT NULL, last_updated TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, "
                 "body BLOB NOT NULL, UNIQUE (type, id))")
    conn.commit()
    conn.close()
    await reopen(db)
    conn = sqlite3.connect(db)
    try:
        assert "owner" in {r[1] for r in conn.execute("PRAGMA table_info(resource)")}
    finally:
        conn.close()
    assert user_version(db) == schema_version()
