"""Scale-out store: MongoDB through pymongo's native async API (``pymongo.AsyncMongoClient``).

Motor is deprecated and past its end of life; this adapter does not use it. The ``store/mongo*.py``
modules are the only ones that import pymongo, and every driver error is translated into
:mod:`fhir_exchange.errors` at their boundary (:func:`fhir_exchange.store.mongo_schema.translate`).

The adapter's parts: this module (:class:`MongoStore`: connecting, reads, searches),
:mod:`~fhir_exchange.store.mongo_schema` (collections, documents, indexes, error translation),
:mod:`~fhir_exchange.store.mongo_units` (units of work: transactions, or one buffered write on a
standalone server), :mod:`~fhir_exchange.store.mongo_history` (vread, history pages, bulk loads of
versions), :mod:`~fhir_exchange.store.mongo_records` (internal records, message answers,
grants), :mod:`~fhir_exchange.store.mongo_changes` (the change feed), :mod:`~fhir_exchange.store.mongo_search`
(search and visibility compiled to filters).

Searches (outside a unit of work) read matches, total and includes in one snapshot session on a
replica set; chains and ``_has`` run their staged queries in that session too.

Reachability: ``open()`` does not fail when MongoDB is down (the server must start and answer 503);
every operation first makes sure indexes exist, and retries that on the next request until MongoDB
answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import datetime
from typing import Any

import orjson
import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError
from pymongo.write_concern import WriteConcern

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.search.index import Indexer
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import deadline, mongo_changes, mongo_history, mongo_records, mongo_search
from fhir_exchange.store.mongo_changes import CHANGE_GAP_S
from fhir_exchange.store.mongo_schema import (
    CHANGES,
    COUNTERS,
    CURRENT,
    GRANTS,
    HISTORY,
    INTERNAL,
    LOCKS,
    MAX_INT,
    MESSAGES,
    MONGO_DEFAULT_DB,
    RECORDS,
    TYPE_RE,
    create_type_indexes,
    ensure_indexes,
    log,
    translate,
    translated,
    version_of,
)
from fhir_exchange.store.mongo_units import MongoUnitOfWork, StandaloneUnitOfWork
from fhir_exchange.store.port import (
    ChangeRecord,
    HistoryPage,
    HistoryQuery,
    Record,
    ResourceVersion,
    SearchResult,
)

# Also what other code may import from here (this module was the whole adapter before issue 16 split it).
__all__ = ["CHANGE_GAP_S", "MONGO_DEFAULT_DB", "MongoStore", "MongoUnitOfWork", "StandaloneUnitOfWork", "translate"]


class _Sequence:
    """A process-local creation sequence (nanoseconds, strictly increasing): the tie-break of lists."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


class MongoStore:
    """The MongoDB adapter of the store port (store/port.py)."""

    name = "mongodb"

    def __init__(self, url: str, indexer: Indexer | None = None, *, database: str | None = None,
                 server_selection_timeout_ms: int = 3000, resource_types: Iterable[str] = (),
                 change_gap_s: float = CHANGE_GAP_S) -> None:
        self.url = url
        self.change_gap_s = change_gap_s  # how long a gap in the change feed is waited for (mongo_changes.py)
        self._resource_types = tuple(resource_types)
        self._indexer = indexer
        self._database_name = database
        self._timeout_ms = server_selection_timeout_ms
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]]
        self._history: AsyncCollection[dict[str, Any]]
        self._locks: AsyncCollection[dict[str, Any]]
        self._grants: AsyncCollection[dict[str, Any]]
        self._messages: AsyncCollection[dict[str, Any]]
        self._records: AsyncCollection[dict[str, Any]]
        self._changes: AsyncCollection[dict[str, Any]]
        self._counters: AsyncCollection[dict[str, Any]]
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._indexed: set[str] = set()
        self._seq = _Sequence()
        self.supports_transactions: bool | None = None  # known once the server has answered
        self.search_timeout = 10.0  # seconds a read or search may take (store/deadline.py, _within)

    @classmethod
    def from_url(cls, url: str, indexer: Indexer | None = None) -> MongoStore:
        return cls(url, indexer)

    def set_search_timeout(self, seconds: float) -> None:
        self.search_timeout = seconds

    @contextmanager
    def _within(self, seconds: float | None = None) -> Iterator[None]:
        """The deadline of one search (``search_timeout``) or read (``seconds``): pymongo's client-side
        operation timeout sends every operation of the block with ``maxTimeMS`` (the server stops it,
        not only the client) and stops waiting itself. A timeout is the deadline's 503; an unreachable
        server stays "unreachable"."""
        seconds = seconds or self.search_timeout
        try:
            with pymongo.timeout(seconds):
                yield
        except (FhirError, PyMongoError) as exc:
            cause = exc if isinstance(exc, PyMongoError) else exc.__cause__
            timed_out = isinstance(cause, PyMongoError) and cause.timeout
            if timed_out and not isinstance(cause, ServerSelectionTimeoutError):
                raise deadline.exceeded(seconds) from cause
            raise

    def set_indexer(self, indexer: Indexer) -> None:
        self._indexer = indexer

    def set_resource_types(self, types: Iterable[str]) -> None:
        """The resource types whose collections and indexes are created at start-up.

        A collection created *during* a transaction is newer than the transaction's snapshot, so a write
        into it conflicts; creating every known type's collection up front (~0.5 s once, ~0.3 s to
        re-check on later starts) keeps that from happening on the first write of a type.
        """
        self._resource_types = tuple(types)

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect lazily; never fails because MongoDB is down (requests answer 503 until it is up)."""
        if self._client is not None:
            return
        options: dict[str, Any] = {"tz_aware": False}
        if "serverselectiontimeoutms" not in self.url.lower():
            options["serverSelectionTimeoutMS"] = self._timeout_ms
        try:
            self._client = AsyncMongoClient(self.url, **options)
            db = self._client.get_default_database(default=self._database_name or MONGO_DEFAULT_DB)
        except (ConfigurationError, ValueError) as exc:
            raise ValueError(f"Invalid MongoDB URL: {exc}") from exc
        self._db = db
        self._history = db[HISTORY]
        self._locks = db[LOCKS]
        self._grants = db[GRANTS]
        self._messages = db[MESSAGES]
        self._records = db[RECORDS]
        self._changes = db[CHANGES]
        # The counter is as durable as a commit: a lost increment would hand out a committed seq again.
        self._counters = db[COUNTERS].with_options(write_concern=WriteConcern("majority", j=True))
        try:
            await self._ensure_ready()
        except FhirError as err:
            log.warning("MongoDB is unreachable at start-up (%s); requests answer 503 until it is reachable",
                        err.diagnostics)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
        self._ready = False
        self._indexed.clear()

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        if self._client is None:
            raise FhirError(Category.FAULT, "The MongoDB store is not open")
        async with self._ready_lock:
            if self._ready:
                return
            with translated():
                hello = await self._client.admin.command("hello")
                self.supports_transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
                self._indexed |= await ensure_indexes(self._db, self._resource_types)
            if self.supports_transactions:
                log.info("MongoDB store %s: replica set, transactions enabled", self._db.name)
            else:
                log.warning("MongoDB store %s: STANDALONE server without transactions; units of work with more "
                            "than one write (transaction Bundles, messages) will be refused. Run a replica set.",
                            self._db.name)
            self._ready = True

    async def _type_coll(self, type: str) -> AsyncCollection[dict[str, Any]]:
        """The collection of a resource type, its indexes created (outside any transaction) on first use."""
        if not TYPE_RE.match(type):
            raise FhirError(Category.INVALID, f"'{type}' is not a resource type name")
        await self._ensure_ready()
        if type not in self._indexed:
            with translated():
                await create_type_indexes(self._db[type])
            self._indexed.add(type)
        return self._db[type]

    async def _type_names(self) -> list[str]:
        await self._ensure_ready()
        with translated():
            names = await self._db.list_collection_names()
        return sorted(n for n in names if n not in INTERNAL and TYPE_RE.match(n))

    @property
    def client(self) -> AsyncMongoClient[dict[str, Any]]:
        if self._client is None:
            raise FhirError(Category.FAULT, "The MongoDB store is not open")
        return self._client

    # -- units of work ----------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoUnitOfWork | StandaloneUnitOfWork]:
        await self._ensure_ready()
        if not self.supports_transactions:
            suow = StandaloneUnitOfWork(self)
            try:
                yield suow
            except BaseException:
                await suow.finish(commit=False)
                raise
            with translated():
                await suow.finish(commit=True)
            return
        with translated():
            session = self.client.start_session(causal_consistency=False)
        try:
            uow = MongoUnitOfWork(self, session)
            with translated():
                await uow.begin()
            try:
                yield uow
            except BaseException:
                await uow.abort()
                raise
            await uow.commit()
        finally:
            with suppress(PyMongoError):
                await session.end_session()

    # -- reads ------------------------------------------------------------------------------------

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        coll = await self._type_coll(type)
        with self._within(deadline.for_read(self.search_timeout)), translated():
            doc = await coll.find_one({"_id": id}, CURRENT)
        return None if doc is None else version_of(doc, type, id)

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None:
        await self._ensure_ready()
        with self._within(deadline.for_read(self.search_timeout)), translated():
            return await mongo_history.version(self._history, type, id, version_id)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        await self._ensure_ready()
        vis: dict[str, Any] | None = None
        if query.visibility is not None:
            # Each version as stored (its own owner); grants and shared types by (type, id).
            vis = await mongo_search.history_clause(query.visibility, query.type, self._granted_keys(None))
            if vis is mongo_search.FALSE:
                return HistoryPage([], 0)
        with self._within(), translated():
            return await mongo_history.page(self._history, query, vis)

    def _finder(self, session: AsyncClientSession | None) -> mongo_search.Find:
        """The staged-query callback of the search compiler, on this search's session (snapshot)."""

        async def find(type: str, filt: dict[str, Any], projection: dict[str, Any]) -> list[dict[str, Any]]:
            coll = await self._type_coll(type)
            with translated():
                return await coll.find(filt, projection, session=session).to_list()

        return find

    def _granted_keys(self, session: AsyncClientSession | None) -> mongo_search.Granted:
        """The grant-staging callback of the search compiler: (type, id) granted, on this session."""

        async def granted(vis: Visibility, type: str | None) -> list[tuple[str, str]]:
            return await mongo_records.granted_keys(self._grants, vis, type, session)

        return granted

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        await self._ensure_ready()
        with translated():
            return await mongo_records.granted_one(self._grants, visibility, type, id, None)

    # -- internal records (store/mongo_records.py) ----------------------------------------------------

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        await self._ensure_ready()
        return await mongo_records.get(self._records, kind, key, now)

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        await self._ensure_ready()
        return await mongo_records.put(self._records, record, if_absent, now)

    async def delete_record(self, kind: str, key: str) -> bool:
        await self._ensure_ready()
        return await mongo_records.delete(self._records, kind, key)

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        await self._ensure_ready()
        return await mongo_records.of_kind(self._records, kind, now)

    async def purge_records(self, now: str) -> int:
        await self._ensure_ready()
        return await mongo_records.purge(self._records, now)

    # -- change feed (store/mongo_changes.py) ---------------------------------------------------------

    async def _allocate(self, n: int) -> tuple[list[int], datetime]:
        return await mongo_changes.allocate(self._counters, n)

    async def _repair_counter(self) -> None:
        await mongo_changes.repair_counter(self._changes, self._counters)

    async def _void(self, seqs: Sequence[int]) -> None:
        await mongo_changes.void(self._changes, seqs)

    async def changes(self, after: int, limit: int = 1000) -> list[ChangeRecord]:
        """Committed writes with ``seq > after``: the contiguous prefix only (store/mongo_changes.py)."""
        await self._ensure_ready()
        return await mongo_changes.after(self._changes, after, limit, self.change_gap_s)

    async def last_change(self) -> int:
        """The end of the contiguous prefix of the feed: a reader starting here misses no later commit."""
        await self._ensure_ready()
        return await mongo_changes.last(self._changes, self.change_gap_s)

    # -- searches -------------------------------------------------------------------------------------

    async def _load(self, keys: Sequence[tuple[str, str]], session: AsyncClientSession | None,
                    ) -> list[ResourceVersion]:
        by_type: dict[str, list[str]] = {}
        for t, i in keys:
            by_type.setdefault(t, []).append(i)
        found: dict[tuple[str, str], ResourceVersion] = {}
        with translated():
            for t, ids in by_type.items():
                async for d in self._db[t].find({"_id": {"$in": ids}}, CURRENT, session=session):
                    found[(t, d["_id"])] = version_of(d, t, d["_id"])
        return [found[k] for k in keys if k in found]

    async def _search(self, query: Any, session: AsyncClientSession | None) -> SearchResult:
        await self._ensure_ready()
        if query.type:
            await self._type_coll(query.type)
            types = [query.type]
        else:
            wanted = set(query.types)
            types = [t for t in await self._type_names() if not wanted or t in wanted]
        find = self._finder(session)
        compiler = mongo_search.Compiler(find, query.visibility, self._granted_keys(session))
        count = min(max(query.count, 0), MAX_INT)
        offset = min(query.offset, MAX_INT)  # BSON integers are 64-bit
        want = offset + count
        count_total = query.total != "none"
        total = 0
        rows: list[dict[str, Any]] = []
        single = len(types) == 1
        with translated():
            for t in types:
                filt = await compiler.filter(query.params, t)
                if filt is mongo_search.FALSE:
                    continue
                coll = self._db[t]
                if count_total:
                    total += await coll.count_documents(filt, session=session)
                if count == 0:
                    continue
                skip, limit = (offset, count) if single else (0, want)
                if query.sort:
                    got = await (await coll.aggregate(mongo_search.sort_pipeline(filt, query.sort, skip, limit),
                                                      session=session)).to_list()
                else:
                    cursor = coll.find(filt, {"_c": 1}, session=session).sort(mongo_search.ORDER)
                    got = await (cursor.skip(skip) if skip else cursor).limit(limit).to_list()
                rows.extend({**d, "t": t} for d in got)
        if not single:  # merge the per-type pages in the order of the sort (creation order without one)
            rows.sort(key=mongo_search.merge_key(query.sort))
            rows = rows[offset: want]
        page = [(d["t"], d["_id"]) for d in rows]
        matches = await self._load(page, session)
        included: list[ResourceVersion] = []
        if query.include or query.revinclude:
            keys = await mongo_search.includes(find, query.include, query.revinclude, page, compiler)
            included = await self._load(keys, session)
        return SearchResult(matches, total if count_total else None, included)

    async def search(self, query: Any) -> SearchResult:
        """One snapshot for the matches, the total and the includes (on a replica set)."""
        await self._ensure_ready()
        if not self.supports_transactions:
            with self._within():
                return await self._search(query, None)
        with translated():
            session = self.client.start_session(snapshot=True)
        try:
            with self._within():
                return await self._search(query, session)
        finally:
            with suppress(PyMongoError):
                await session.end_session()

    async def count(self, type: str | None = None) -> int:
        types = [type] if type else await self._type_names()
        n = 0
        with translated():
            for t in types:
                n += await (await self._type_coll(t)).count_documents({"del": False})
        return n

    async def reindex(self, type: str | None = None) -> int:
        indexer = self._indexer
        if indexer is None:
            return 0
        n = 0
        for t in [type] if type else await self._type_names():
            coll = await self._type_coll(t)
            with translated():
                async for doc in coll.find({"del": False}, {"body": 1, "v": 1}):
                    entries = indexer(t, orjson.loads(doc["body"]))
                    # Guarded by the version: a concurrent update re-indexes itself.
                    await coll.update_one({"_id": doc["_id"], "v": doc["v"]},
                                          {"$set": mongo_search.stored_fields(doc["_id"], entries)})
                    n += 1
        return n

    async def import_versions(self, versions: Sequence[ResourceVersion]) -> int:
        """Bulk-load versions exactly as they are (``fhir-exchange migrate``); returns how many were new
        (store/mongo_history.py)."""
        if not versions:
            return 0
        await self._ensure_ready()
        return await mongo_history.load(self, versions)

    async def all_versions(self) -> AsyncIterator[ResourceVersion]:
        """Every stored version of every resource, oldest first per resource (for migration checks)."""
        await self._ensure_ready()
        with translated():
            async for version in mongo_history.every(self._history):
                yield version
