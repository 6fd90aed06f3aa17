"""Embedded store: one SQLite file in WAL mode (the adapter; its parts are the modules beside it).

Writes run on one dedicated writer thread and connection; an asyncio lock keeps units of work
(:mod:`fhir_exchange.store.sqlite_units`) from interleaving, and units that arrive together share one
``BEGIN IMMEDIATE`` transaction and one COMMIT, each in its own savepoint (group commit,
:mod:`fhir_exchange.store.group_commit`): :meth:`SqliteStore.transaction` opens, joins and closes the
groups. Reads run on a small pool of reader threads, each with its own connection, each read in one read
transaction (one snapshot; WAL lets it run while a write is in progress); point reads by primary key run
on the event loop's thread on a read-only connection of their own.

The adapter's parts: :mod:`~fhir_exchange.store.sqlite_schema` (tables, connections, migration, error
translation), :mod:`~fhir_exchange.store.sqlite_units` (the unit of work: resource writes),
:mod:`~fhir_exchange.store.sqlite_history` (vread, history pages),
:mod:`~fhir_exchange.store.sqlite_records` (internal records, message answers),
:mod:`~fhir_exchange.store.sqlite_changes` (the change feed), :mod:`~fhir_exchange.store.sqlite_search`
(search, visibility and grants).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.index import Indexer
from fhir_exchange.search.query import SearchQuery, Visibility
from fhir_exchange.store import deadline, sqlite_changes, sqlite_history, sqlite_records
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.deadline import Deadline
from fhir_exchange.store.group_commit import MAX_MEMBERS, Group, Member
from fhir_exchange.store.port import (
    ChangeRecord,
    HistoryPage,
    HistoryQuery,
    Record,
    ResourceVersion,
    SearchResult,
)
from fhir_exchange.store.sqlite_schema import (
    COLS,
    MAX_INT,
    SYNCHRONOUS,
    _logged_at,
    connect,
    migrate,
    schema_version,
    version_of,
)
from fhir_exchange.store.sqlite_schema import translate as _translate
from fhir_exchange.store.sqlite_units import IN_UNIT, SqliteUnitOfWork

# Also what other code imports from here (this module was the whole adapter before issue 16 split it).
__all__ = ["SYNCHRONOUS", "SqliteStore", "SqliteUnitOfWork", "_logged_at", "_translate", "schema_version"]

T = TypeVar("T")


class SqliteStore:
    """The SQLite adapter of the store port (store/port.py)."""

    name = "sqlite"

    def __init__(self, path: str | Path, indexer: Indexer | None = None, readers: int = 4) -> None:
        self.path = str(path)
        self._indexer = indexer
        self._readers = readers
        self._write_lock = asyncio.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._writer_conn: sqlite3.Connection
        self._reader_conns: list[sqlite3.Connection] = []
        self._inline_conn: sqlite3.Connection | None = None  # point reads of records, on the event loop
        self._opened = False
        # Reads stop after this many seconds (store/deadline.py); searches take at most all readers but
        # one, so that however many costly searches arrive, a plain read finds a reader free.
        self.search_timeout = 10.0
        self._slot = deadline.ThreadSlot()
        self._search_slots = asyncio.Semaphore(max(1, readers - 1))
        self._estimates = search_sql.Estimates()  # of broad criteria: which criterion drives a search
        self._group: Group | None = None  # the units sharing the open transaction (group commit)
        self._wanting = 0  # units of work holding or waiting for the write lock
        self._committing = 0  # groups whose COMMIT is running on the writer thread

    @classmethod
    def from_url(cls, url: str, indexer: Indexer | None = None) -> SqliteStore:
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
        return cls(path or ":memory:", indexer)

    def set_indexer(self, indexer: Indexer) -> None:
        self._indexer = indexer

    def set_search_timeout(self, seconds: float) -> None:
        self.search_timeout = seconds

    synchronous = "FULL"  # durable by default (a medical record); set_synchronous("normal") relaxes it

    def set_synchronous(self, mode: str) -> None:
        """The writer's ``PRAGMA synchronous`` (settings.sqlite_synchronous), before :meth:`open`."""
        if mode.lower() not in SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS)}, not {mode!r}")
        self.synchronous = SYNCHRONOUS[mode.lower()]

    async def open(self) -> None:
        if self._opened:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def go() -> sqlite3.Connection:
            conn = connect(self.path, self.synchronous)
            migrate(conn)
            return conn

        self._writer_conn = await asyncio.get_running_loop().run_in_executor(self._writer, go)
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        await asyncio.get_running_loop().run_in_executor(self._writer, self._writer_conn.close)
        for c in self._reader_conns:
            c.close()
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, fn)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=1")
            conn.set_progress_handler(self._slot.check, deadline.CHECK_EVERY)
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _on_reader(self, fn: Callable[[sqlite3.Connection], T], limit: Deadline | None = None) -> T:
        limit = limit or Deadline(deadline.for_read(self.search_timeout))

        def go() -> T:
            if limit.passed():  # it waited for a reader past its deadline (or its client left meanwhile)
                raise sqlite3.OperationalError("interrupted")
            conn = self._reader_conn()
            # One read transaction: every statement of fn sees the same snapshot.
            conn.execute("BEGIN")
            self._slot.current = limit
            try:
                return fn(conn)
            finally:
                self._slot.current = None  # before COMMIT, which the handler must never abort
                conn.execute("COMMIT")

        try:
            # In a copy of the caller's context, as asyncio.to_thread: what the search notes for its
            # request (search/includes.py STOPPED) reaches it.
            ctx = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(self._reader, ctx.run, go)
        except asyncio.CancelledError:
            limit.cancelled = True  # the request was abandoned: the handler stops the statement
            raise
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted" and limit.passed():
                raise deadline.exceeded(limit.seconds) from exc
            raise _translate(exc) from exc

    async def _on_search_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A costly read (a search, a history page): on at most all readers but one, within its deadline."""
        limit = Deadline(self.search_timeout)
        try:
            await asyncio.wait_for(self._search_slots.acquire(), limit.remaining())
        except TimeoutError:
            raise deadline.exceeded(limit.seconds) from None
        try:
            return await self._on_reader(fn, limit)
        finally:
            self._search_slots.release()

    def _current_group(self) -> Group:
        if self._group is None:
            self._group = Group(self._writer_conn, _translate)
        return self._group

    def _close_group(self) -> None:
        """Commit the open group: its deferred writes and the COMMIT in one hop, submitted now, so that
        the next unit's hops (the writer thread runs them in order) come after it; the lock is not held
        meanwhile, so the next units are already prepared (validated) while the COMMIT syncs."""
        group, self._group = self._group, None
        if group is None:
            return
        batch = group.take_deferred()
        if not group.begun and not batch:
            group.settle(None)
            return

        def settle(done: asyncio.Future[None]) -> None:
            self._committing -= 1
            exc = None if done.cancelled() else done.exception()
            group.settle(_translate(exc) if isinstance(exc, sqlite3.Error) else exc)
            if self._wanting == 0 and self._committing == 0:
                self._close_group()  # the units that arrived during this COMMIT: the next one

        self._committing += 1
        asyncio.get_running_loop().run_in_executor(self._writer, group.commit, batch).add_done_callback(settle)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteUnitOfWork]:
        """One unit of work. Units run one at a time on the writer connection; those that arrive while
        others run share their SQLite transaction and COMMIT (group commit, store/group_commit.py),
        and the context exits once that COMMIT has returned."""
        self._wanting += 1
        member: Member | None = None
        acquired = False
        try:
            async with self._write_lock:
                acquired = True
                uow = SqliteUnitOfWork(self)
                held = IN_UNIT.set((*IN_UNIT.get(), uow))
                try:
                    yield uow
                    pending = uow.take_pending()
                    if uow.begun:
                        joined = uow.group
                        assert joined is not None

                        def finish() -> None:
                            for write in pending:
                                write()
                            joined.release_unit()

                        await self._on_writer(finish)
                        member = joined.join([])
                    elif pending:  # deferred: its writes run in the group's next hop
                        member = self._current_group().join(pending)
                except BaseException:
                    group = uow.group
                    if group is not None:
                        await self._on_writer(group.abort_unit)
                        if group.lost is not None and self._group is group:
                            self._group = None
                            group.settle(None)
                    raise
                finally:
                    uow.ended = True
                    IN_UNIT.reset(held)
                    self._wanting -= 1
                    # The group commits when no unit waits for the writer, unless a COMMIT is running:
                    # the units arriving meanwhile join it, and it commits when that COMMIT returns.
                    if self._group is not None and ((self._wanting == 0 and self._committing == 0)
                                                    or len(self._group.members) >= MAX_MEMBERS):
                        self._close_group()
        finally:
            if not acquired:  # cancelled while waiting for the lock: it may have been the last one wanted
                self._wanting -= 1
                if self._wanting == 0 and self._committing == 0:
                    self._close_group()
        if member is not None:
            try:
                error = await asyncio.shield(member.done)
            except asyncio.CancelledError:
                member.withdrawn = True  # its writes, if they have not run yet, never will
                raise
            if error is not None:
                raise error

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        # A primary-key lookup, on the caller's thread as get_record does (issue 19: the hop to a reader
        # thread cost several times the lookup and was the largest share of a read by id).
        try:
            r = self._inline().execute(f"SELECT {COLS} FROM resource WHERE type=? AND id=?", (type, id)).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return None if r is None else version_of(r)

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None:
        return await self._on_reader(lambda conn: sqlite_history.version(conn, type, id, version_id))

    async def history(self, query: HistoryQuery) -> HistoryPage:
        sql_where, args = sqlite_history.where(query)
        return await self._on_search_reader(lambda conn: sqlite_history.page(conn, query, sql_where, args))

    def _search_on(self, conn: sqlite3.Connection, query: SearchQuery) -> SearchResult:
        # Matches and includes are read on one connection inside one transaction: one snapshot.
        if query.offset > MAX_INT or query.count > MAX_INT:  # SQLite integers are 64-bit
            query = dataclasses.replace(query, offset=min(query.offset, MAX_INT), count=min(query.count, MAX_INT))
        rids, total = search_sql.execute(conn, query, self._estimates)
        included = search_sql.includes(conn, query, rids)
        return SearchResult(self._load_rids(conn, rids), total, self._load_rids(conn, included))

    @staticmethod
    def _load_rids(conn: sqlite3.Connection, rids: list[int]) -> list[ResourceVersion]:
        if not rids:
            return []
        found: dict[int, ResourceVersion] = {}
        for start in range(0, len(rids), 500):
            chunk = rids[start : start + 500]
            for r in conn.execute(
                f"SELECT rid, {COLS} FROM resource WHERE rid IN ({','.join('?' * len(chunk))})", chunk
            ):
                found[r[0]] = version_of(r[1:])
        return [found[rid] for rid in rids if rid in found]

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._on_search_reader(lambda conn: self._search_on(conn, query))

    async def count(self, type: str | None = None) -> int:
        def go(conn: sqlite3.Connection) -> int:
            if type:
                return conn.execute("SELECT count(*) FROM resource WHERE type=? AND deleted=0", (type,)).fetchone()[0]
            return conn.execute("SELECT count(*) FROM resource WHERE deleted=0").fetchone()[0]

        return await self._on_reader(go)

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        return await self._on_reader(lambda conn: search_sql.granted(conn, visibility, type, id))

    async def changes(self, after: int, limit: int = 1000) -> list[ChangeRecord]:
        return await self._on_reader(lambda conn: sqlite_changes.after(conn, after, limit))

    async def last_change(self) -> int:
        return await self._on_reader(sqlite_changes.last)

    # -- internal records (store/sqlite_records.py) -------------------------------------------------

    async def _record_write(self, sql: str, args: Sequence[Any]) -> int:
        """One statement on the writer connection as a unit of work of its own (committed with its group);
        its change count."""
        if any(u._store is self and not u.ended for u in IN_UNIT.get()):
            raise FhirError(Category.FAULT, "A record is written while this task holds a unit of work of the "
                                            "same SQLite store: the write would wait for that unit of work forever")

        async with self.transaction() as uow:  # a unit of its own: committed with its group
            return await uow._run(lambda: self._writer_conn.execute(sql, args).rowcount)

    def _inline(self) -> sqlite3.Connection:
        """The read-only connection of point reads on the event loop's thread (WAL: never waits for the writer)."""
        conn = self._inline_conn
        if conn is None:
            conn = self._inline_conn = connect(self.path)
            conn.execute("PRAGMA query_only=1")
        return conn

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        # A primary-key lookup takes microseconds, a hop to a reader thread a few hundred (every
        # authenticated request reads its client's record): it runs here, on the caller's thread, on a
        # read-only connection of its own (WAL: it never waits for the writer).
        try:
            return sqlite_records.get(self._inline(), kind, key, now)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        return await self._record_write(*sqlite_records.put(record, if_absent, now)) > 0

    async def delete_record(self, kind: str, key: str) -> bool:
        return await self._record_write(sqlite_records.DELETE, (kind, key)) > 0

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        return await self._on_reader(lambda conn: sqlite_records.of_kind(conn, kind, now))

    async def purge_records(self, now: str) -> int:
        return await self._record_write(sqlite_records.PURGE, (now,))

    async def reindex(self, type: str | None = None) -> int:
        import orjson

        indexer = self._indexer
        if indexer is None:
            return 0
        async with self.transaction() as uow:

            def go() -> int:
                conn = self._writer_conn
                sql = "SELECT rid, type, body FROM resource WHERE deleted=0"
                rows = conn.execute(sql + (" AND type=?" if type else ""), (type,) if type else ()).fetchall()
                for rid, t, body in rows:
                    search_sql.delete_index(conn, rid)
                    search_sql.write_index(conn, rid, t, indexer(t, orjson.loads(body)))
                return len(rows)

            return await uow._run(go)
