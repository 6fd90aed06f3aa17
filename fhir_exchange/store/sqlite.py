"""Embedded store: one SQLite file in WAL mode.

Writes run on one dedicated writer thread and connection; an asyncio lock keeps units of work from
interleaving, and units that arrive together share one ``BEGIN IMMEDIATE`` transaction and one COMMIT,
each in its own savepoint (group commit, :mod:`fhir_exchange.store.group_commit`). Because writers are
serialised, a conditional create (search, then insert) inside one unit of work is race-free. Reads
run on a small pool of reader threads, each with its own connection; WAL gives each statement a
consistent snapshot while a write is in progress.

Beside the resources: ``owner`` (the institution a resource belongs to) on the current row and on every
history row; ``access_grant`` (grants, replaced per basis; see :mod:`fhir_exchange.store.sqlite_search`
for how visibility is compiled into queries); ``message`` (stored answers to FHIR messages, keyed by
message); ``change`` (the change feed: one row per committed put/delete, ``seq`` an AUTOINCREMENT key
written in the writing transaction; writers are serialised, so seq order is commit order and a reader
never sees a lower seq appear after a higher one); ``record`` (internal records, :class:`Record`, keyed
by (kind, key), outside the FHIR namespace). Opening a database made before these adds them
(``ALTER TABLE ... ADD COLUMN owner``, ``CREATE TABLE IF NOT EXISTS``).

Record writes are single statements run as a unit of work of their own (so a record written while a
unit is open waits for it, and never commits or rolls back with it). ``put_record(if_absent=True)`` is one ``INSERT ...
ON CONFLICT DO UPDATE ... WHERE expires <= now``: SQLite's write lock makes it atomic across
processes, and its change count says whether it wrote.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.index import Indexer
from fhir_exchange.search.params import near
from fhir_exchange.search.query import SearchQuery, Visibility
from fhir_exchange.store import deadline
from fhir_exchange.store import sqlite_search as search_sql
from fhir_exchange.store.deadline import Deadline
from fhir_exchange.store.group_commit import MAX_MEMBERS, Group, Member
from fhir_exchange.store.offload import extract_entries
from fhir_exchange.store.port import (
    ANY,
    NEW,
    ChangeRecord,
    Grant,
    HistoryPage,
    HistoryQuery,
    MessageRecord,
    Record,
    ResourceVersion,
    SearchResult,
    VersionConflict,
)

T = TypeVar("T")

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

_MAX_INT = 2**63 - 1  # LIMIT/OFFSET beyond SQLite's 64-bit integers raise OverflowError

_COLS = "type, id, version, last_updated, deleted, body, owner"
_UNEXPIRED = "(expires IS NULL OR expires > ?)"
# The units of work the current task runs inside (its own, or its parent task's when it was made): a
# record write of the same store there, while the unit is open, would wait for it, and it for the write.
_IN_UNIT: ContextVar[tuple[SqliteUnitOfWork, ...]] = ContextVar("sqlite_in_unit", default=())
_MAX_PENDING = 512  # buffered writes of a unit of work before they are run (bounds the memory they hold)


def _row(r: tuple[Any, ...], method: str = "PUT") -> ResourceVersion:
    return ResourceVersion(r[0], r[1], r[2], r[3], bool(r[4]), bytes(r[5]), method, r[6])


# synchronous in WAL mode: FULL syncs the WAL at every commit, so an acknowledged write survives power
# loss; NORMAL syncs only at checkpoints (faster; the last commits may be lost, the file never corrupts).
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


def _connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
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


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to this version once; ``PRAGMA user_version`` records it, so a database already
    there is not touched (start-up reads one header field, whatever the database's size)."""
    version = schema_version()
    if conn.execute("PRAGMA user_version").fetchone()[0] == version:
        return
    for ddl in SCHEMA:
        conn.execute(ddl)
    _add_columns(conn)  # before the index DDL, which indexes the added columns
    for ddl in search_sql.SCHEMA:
        conn.execute(ddl)
    conn.execute(f"PRAGMA user_version={version}")


def _add_columns(conn: sqlite3.Connection) -> None:
    """A database made before a column was added gets it (once: the next open finds it there)."""
    for table, column, kind in ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _record(r: tuple[Any, ...]) -> Record:
    return Record(r[0], r[1], bytes(r[2]), r[3])


def _change(conn: sqlite3.Connection, version: ResourceVersion, deleted: bool) -> None:
    conn.execute("INSERT INTO change(type, id, version, deleted, last_updated) VALUES (?,?,?,?,?)",
                 (version.type, version.id, version.version_id, int(deleted), version.last_updated))


_logged_at: dict[str, float] = {}  # a storage condition's last log line: once a minute, not per request


def _log_once(kind: str, message: str, *args: object) -> None:
    now = time.monotonic()
    if now - _logged_at.get(kind, -120.0) >= 60.0:
        _logged_at[kind] = now
        logging.getLogger(__name__).error(message, *args)


def _translate(exc: sqlite3.Error) -> FhirError:
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


class SqliteUnitOfWork:
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
            r = self._conn.execute(f"SELECT {_COLS} FROM resource WHERE type=? AND id=?", (type, id)).fetchone()
            return None if r is None else _row(r)

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
            _change(self._conn, version, False)

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
            _change(self._conn, version, True)

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
        def go() -> MessageRecord | None:
            r = self._conn.execute("SELECT key, digest, body FROM message WHERE key=?", (key,)).fetchone()
            return None if r is None else MessageRecord(r[0], r[1], bytes(r[2]))

        return await self._run(go)

    async def write_message(self, record: MessageRecord) -> None:
        def go() -> None:
            try:
                self._conn.execute("INSERT INTO message(key, digest, body) VALUES (?,?,?)",
                                   (record.key, record.digest, record.body))
            except sqlite3.IntegrityError:
                raise VersionConflict(f"An answer to message {record.key} is already stored") from None

        await self._run(go)


class SqliteStore:
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
            conn = _connect(self.path, self.synchronous)
            _migrate(conn)
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
            conn = _connect(self.path)
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
                held = _IN_UNIT.set((*_IN_UNIT.get(), uow))
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
                    _IN_UNIT.reset(held)
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
            r = self._inline().execute(f"SELECT {_COLS} FROM resource WHERE type=? AND id=?", (type, id)).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return None if r is None else _row(r)

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None:
        def go(conn: sqlite3.Connection) -> ResourceVersion | None:
            r = conn.execute(
                f"SELECT {_COLS}, method FROM history WHERE type=? AND id=? AND version=?", (type, id, version_id)
            ).fetchone()
            return None if r is None else _row(r, r[7])

        return await self._on_reader(go)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        where: list[str] = []
        args: list[Any] = []
        if query.type:
            where.append("h.type = ?")
            args.append(query.type)
        if query.id:
            where.append("h.id = ?")
            args.append(query.id)
        if query.since:
            where.append("h.last_updated >= ?")
            args.append(query.since)
        if query.till:
            where.append("h.last_updated <= ?")
            args.append(query.till)
        if query.at:
            # Versions current at that instant: the newest version not after it, per resource.
            where.append("h.last_updated <= ?")
            args.append(query.at)
            where.append(
                "h.version = (SELECT max(h2.version) FROM history h2 WHERE h2.type = h.type "
                "AND h2.id = h.id AND h2.last_updated <= ?)"
            )
            args.append(query.at)
        if query.visibility is not None:
            # Each version as stored (its own owner); grants and shared types by (type, id).
            vis = search_sql.visible(query.visibility, "h", [query.type] if query.type else None)
            if vis is not None:
                where.append(vis[0])
                args.extend(vis[1])
        sql_where = ("WHERE " + " AND ".join(where)) if where else ""

        def go(conn: sqlite3.Connection) -> HistoryPage:
            total = conn.execute(f"SELECT count(*) FROM history h {sql_where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT h.type, h.id, h.version, h.last_updated, h.deleted, h.body, h.owner, h.method FROM history h "
                f"{sql_where} ORDER BY h.last_updated DESC, h.type, h.id, h.version DESC LIMIT ? OFFSET ?",
                [*args, min(query.count, _MAX_INT), min(query.offset, _MAX_INT)],
            ).fetchall()
            return HistoryPage([_row(r, r[7]) for r in rows], total)

        return await self._on_search_reader(go)

    def _search_on(self, conn: sqlite3.Connection, query: SearchQuery) -> SearchResult:
        # Matches and includes are read on one connection inside one transaction: one snapshot.
        if query.offset > _MAX_INT or query.count > _MAX_INT:  # SQLite integers are 64-bit
            query = dataclasses.replace(query, offset=min(query.offset, _MAX_INT), count=min(query.count, _MAX_INT))
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
                f"SELECT rid, {_COLS} FROM resource WHERE rid IN ({','.join('?' * len(chunk))})", chunk
            ):
                found[r[0]] = _row(r[1:])
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
        def go(conn: sqlite3.Connection) -> list[ChangeRecord]:
            rows = conn.execute("SELECT seq, type, id, version, deleted, last_updated FROM change WHERE seq > ? "
                                "ORDER BY seq LIMIT ?", (min(after, _MAX_INT), min(max(limit, 0), _MAX_INT)))
            return [ChangeRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]

        return await self._on_reader(go)

    async def last_change(self) -> int:
        return await self._on_reader(lambda conn: conn.execute("SELECT coalesce(max(seq), 0) FROM change")
                                     .fetchone()[0])

    # -- internal records ---------------------------------------------------------------------------

    async def _record_write(self, sql: str, args: Sequence[Any]) -> int:
        """One statement on the writer connection as a unit of work of its own (committed with its group);
        its change count."""
        if any(u._store is self and not u.ended for u in _IN_UNIT.get()):
            raise FhirError(Category.FAULT, "A record is written while this task holds a unit of work of the "
                                            "same SQLite store: the write would wait for that unit of work forever")

        async with self.transaction() as uow:  # a unit of its own: committed with its group
            return await uow._run(lambda: self._writer_conn.execute(sql, args).rowcount)

    def _inline(self) -> sqlite3.Connection:
        """The read-only connection of point reads on the event loop's thread (WAL: never waits for the writer)."""
        conn = self._inline_conn
        if conn is None:
            conn = self._inline_conn = _connect(self.path)
            conn.execute("PRAGMA query_only=1")
        return conn

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        # A primary-key lookup takes microseconds, a hop to a reader thread a few hundred (every
        # authenticated request reads its client's record): it runs here, on the caller's thread, on a
        # read-only connection of its own (WAL: it never waits for the writer).
        try:
            r = self._inline().execute(
                f"SELECT kind, key, value, expires FROM record WHERE kind=? AND key=? AND {_UNEXPIRED}",
                (kind, key, now)).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return None if r is None else _record(r)

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        sql = ("INSERT INTO record(kind, key, value, expires) VALUES (?,?,?,?) ON CONFLICT(kind, key) "
               "DO UPDATE SET value=excluded.value, expires=excluded.expires")
        args: list[Any] = [record.kind, record.key, record.value, record.expires]
        if if_absent:  # the existing row is replaced only when it has expired: no change otherwise
            sql += " WHERE record.expires <= ?"
            args.append(now)
        return await self._record_write(sql, args) > 0

    async def delete_record(self, kind: str, key: str) -> bool:
        return await self._record_write("DELETE FROM record WHERE kind=? AND key=?", (kind, key)) > 0

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        def go(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(f"SELECT kind, key, value, expires FROM record WHERE kind=? AND {_UNEXPIRED} "
                                "ORDER BY key", (kind, now))
            return [_record(r) for r in rows]

        return await self._on_reader(go)

    async def purge_records(self, now: str) -> int:
        return await self._record_write("DELETE FROM record WHERE expires <= ?", (now,))

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
