"""The SQLite store's unit of work: reads, writes, grants and message answers inside one transaction.

A unit of work runs on the store's one writer connection and thread, one unit at a time (the store's
write lock); the units that arrive while others run share one ``BEGIN IMMEDIATE`` transaction and one
COMMIT, each inside its own ``SAVEPOINT`` (group commit, :mod:`fhir_exchange.store.group_commit`; the
store opens, joins and closes the groups, ``SqliteStore.transaction``). Because writers are serialised, a
conditional create (search, then insert) inside one unit is race-free, and :meth:`lock_key` has nothing
to do.

A put writes the current row (``resource``), the history row, the search index rows and the change row
(:mod:`fhir_exchange.store.sqlite_changes`); a delete the same with an empty body and no index rows.
Their version preconditions are checked on the writer connection before the write, in the same SQLite
transaction. Writes are buffered and run in one hop to the writer thread with the unit's next read,
search or its end (:meth:`SqliteUnitOfWork._buffer` says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from fhir_exchange.search.query import SearchQuery, Visibility
from fhir_exchange.store import sqlite_changes, sqlite_records
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.group_commit import Group
from fhir_exchange.store.offload import extract_entries
from fhir_exchange.store.port import (
    ANY,
    NEW,
    Grant,
    MessageRecord,
    ResourceVersion,
    SearchResult,
    VersionConflict,
)
from fhir_exchange.store.sqlite_schema import COLS, version_of

if TYPE_CHECKING:
    from fhir_exchange.store.sqlite import SqliteStore

T = TypeVar("T")

# The units of work the current task runs inside (its own, or its parent task's when it was made): a
# record write of the same store there, while the unit is open, would wait for it, and it for the write.
IN_UNIT: ContextVar[tuple[SqliteUnitOfWork, ...]] = ContextVar("sqlite_in_unit", default=())
_MAX_PENDING = 512  # buffered writes of a unit of work before they are run (bounds the memory they hold)


class SqliteUnitOfWork:
    """One unit of work of a :class:`SqliteStore`, made by ``SqliteStore.transaction``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._conn = store._writer_conn
        self._pending: list[Callable[[], None]] = []
        # Its savepoint (and the group's BEGIN IMMEDIATE) opens in its first hop to the writer thread.
        self.begun = False
        self.group: Group | None = None
        self.ended = False

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread after the writes buffered so far (read-your-writes), inside
        this unit's savepoint of the group's transaction (store/group_commit.py)."""
        pending = self.take_pending()
        group = self._store._current_group()
        deferred = group.take_deferred()  # earlier units of the group whose writes have not run yet
        begin = not self.begun
        self.begun = True
        self.group = group

        def after_pending() -> T:
            group.run_deferred(deferred)
            if begin:
                group.begin()
                group.open_unit()
            for write in pending:
                write()
            return fn()

        return await self._store._on_writer(after_pending)

    def take_pending(self) -> list[Callable[[], None]]:
        pending, self._pending = self._pending, []
        return pending

    async def _buffer(self, write: Callable[[], None]) -> None:
        # Each hop to the writer thread costs far more than the SQL it runs (thread wake-up and GIL
        # hand-over), so writes are buffered and run in one hop with the next read, search or the commit.
        # Their preconditions are still checked in the same SQLite transaction, before the commit.
        self._pending.append(write)
        if len(self._pending) >= _MAX_PENDING:
            await self._run(lambda: None)

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        def go() -> ResourceVersion | None:
            r = self._conn.execute(f"SELECT {COLS} FROM resource WHERE type=? AND id=?", (type, id)).fetchone()
            return None if r is None else version_of(r)

        return await self._run(go)

    def _check(self, type: str, id: str, expected_version: int) -> tuple[int | None, int]:
        r = self._conn.execute("SELECT rid, version, deleted FROM resource WHERE type=? AND id=?",
                               (type, id)).fetchone()
        current = 0 if r is None else r[1]
        if expected_version == NEW and r is not None and not r[2]:
            raise VersionConflict(f"{type}/{id} already exists")
        if expected_version not in (NEW, ANY) and expected_version != current:
            raise VersionConflict(
                f"Version conflict on {type}/{id}: expected version {expected_version}, current is {current}"
            )
        return (None if r is None else r[0]), current

    async def put(self, version: ResourceVersion, resource: dict[str, Any], *, expected_version: int) -> None:
        entries = await extract_entries(self._store._indexer, version, resource)

        def go() -> None:
            rid, current = self._check(version.type, version.id, expected_version)
            if version.version_id <= current:
                raise VersionConflict(f"{version.type}/{version.id} moved on to version {current}")
            if rid is None:
                cur = self._conn.execute(
                    "INSERT INTO resource(type, id, version, last_updated, deleted, owner, body) "
                    "VALUES (?,?,?,?,0,?,?)",
                    (version.type, version.id, version.version_id, version.last_updated, version.owner,
                     version.body),
                )
                rid = cur.lastrowid
            else:
                self._conn.execute(
                    "UPDATE resource SET version=?, last_updated=?, deleted=0, owner=?, body=? WHERE rid=?",
                    (version.version_id, version.last_updated, version.owner, version.body, rid),
                )
                search_sql.delete_index(self._conn, rid)
            assert rid is not None
            search_sql.write_index(self._conn, rid, version.type, entries)
            self._conn.execute(
                "INSERT INTO history(type, id, version, last_updated, deleted, method, owner, body) "
                "VALUES (?,?,?,?,0,?,?,?)",
                (version.type, version.id, version.version_id, version.last_updated, version.method,
                 version.owner, version.body),
            )
            sqlite_changes.record(self._conn, version, False)

        await self._buffer(go)

    async def delete(self, version: ResourceVersion, *, expected_version: int) -> None:
        def go() -> None:
            rid, _current = self._check(version.type, version.id, expected_version)
            if rid is None:
                return
            self._conn.execute(
                "UPDATE resource SET version=?, last_updated=?, deleted=1, owner=?, body=? WHERE rid=?",
                (version.version_id, version.last_updated, version.owner, b"", rid),
            )
            search_sql.delete_index(self._conn, rid)
            self._conn.execute(
                "INSERT INTO history(type, id, version, last_updated, deleted, method, owner, body) "
                "VALUES (?,?,?,?,1,'DELETE',?,?)",
                (version.type, version.id, version.version_id, version.last_updated, version.owner, b""),
            )
            sqlite_changes.record(self._conn, version, True)

        await self._buffer(go)

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._run(lambda: self._store._search_on(self._conn, query))

    async def lock_key(self, key: str) -> None:
        # Writers are already serialised by the unit-of-work lock.
        return None

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        return await self._run(lambda: search_sql.granted(self._conn, visibility, type, id))

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        grants = list(grants)
        await self._buffer(lambda: search_sql.replace_grants(self._conn, basis, grants))

    async def read_message(self, key: str) -> MessageRecord | None:
        return await self._run(lambda: sqlite_records.read_message(self._conn, key))

    async def write_message(self, record: MessageRecord) -> None:
        await self._run(lambda: sqlite_records.write_message(self._conn, record))
