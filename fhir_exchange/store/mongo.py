"""Scale-out store: MongoDB through pymongo's native async API (``pymongo.AsyncMongoClient``).

Motor is deprecated and past its end of life; this adapter does not use it. It is the only module
that imports pymongo, and it translates every driver error into :mod:`fhir_exchange.errors` here:
connection loss and server selection timeouts become TRANSIENT (503 with ``Retry-After``), duplicate
keys and write conflicts on a version become :class:`VersionConflict`, anything else a FAULT.

Layout (docs/scaling.md explains the sharded form):

- one collection per resource type, ``_id`` = the logical id, with ``v`` (versionId), ``lu``
  (lastUpdated, a FHIR instant: sortable as text), ``del``, ``m`` (method), ``body``, ``_c`` (creation
  sequence: the order of unsorted results), ``_s`` and ``_o`` (the search and sort values, see
  :mod:`fhir_exchange.store.mongo_search`);
- ``history``: insert-only, ``_id`` = ``Type/id/_history/n``, every version including delete markers;
- ``locks``: one small document per conditional-create key (``_id`` = SHA-256 of the key), written
  inside the transaction so that concurrent identical conditional creates conflict and serialise;
- ``own`` on current and history documents: the owner (institution) of that version;
- ``grants``: one document per grant (``b`` basis, ``g`` grantee, ``t``/``i`` the resource, ``u`` until),
  replaced per basis inside the unit of work; searches stage the ids granted on a type (see
  :mod:`fhir_exchange.store.mongo_search` for the visibility clause);
- ``messages``: stored answers to FHIR messages (``_id`` = the message key), written in the unit of work;
- ``records``: internal records (:class:`~fhir_exchange.store.port.Record`), ``{_id: "kind|key", k: kind,
  n: key, v: value (binary), x: expires or null}``, each call one single-document operation outside any
  session (so on a standalone server too); ``put_record(if_absent=True)`` is an upsert filtered on
  ``{_id, x <= now}``: an unexpired record does not match, the upsert's insert then hits the ``_id``
  and fails with a duplicate key, which answers False (of concurrent callers exactly one writes);
- ``changes`` and ``counters``: the change feed, below.

Change feed. Every committed put/delete gets a ``changes`` document ``{_id: seq, t, i, v, del, lu, at}``.
Concurrent transactions cannot share a counter document inside their transactions without conflicting,
so a unit of work allocates a block of seqs at commit time with one atomic ``$inc`` on
``counters/changes`` *outside* its transaction session, just before ``commitTransaction``, and inserts
its change documents with those seqs inside the transaction: they become visible with its writes, or
never. If the commit fails, ``void`` documents are inserted for the allocated seqs outside the
transaction (best effort; a duplicate key there means the commit did happen). A standalone unit of work
allocates at its end, before applying its write, and writes the change document after it.

Seqs are allocated in one order and committed in another, so a reader may see seq n+1 before n. So
:meth:`MongoStore.changes` returns only the contiguous prefix after the cursor: void documents are
skipped but close the gap; a gap is skipped once the first document after it was allocated more than
``change_gap_s`` (default 60 s, MongoDB's transaction lifetime) ago, because the gap was allocated
earlier still and its transaction has ended by then (committed, so present, or never). A reader
therefore never moves its cursor past a seq that can still appear, and sees every commit once, at the
price of waiting up to the bound behind a unit of work that died between allocation and commit.
``at`` is the allocating server's clock; clocks of the application servers must agree to well within
the bound. :meth:`MongoStore.last_change` is the end of that prefix (not the highest seq allocated).

The body is stored as BSON binary: the exact JSON bytes the server serialised once with orjson.
Reading returns them as ``bytes`` with no decoding at all; a BSON sub-document would cost a BSON
decode plus an orjson re-encode on every read (and would not give back the same bytes: BSON has no
arbitrary-precision decimals, so ``1.50`` would come back as ``1.5``). The server never queries inside
the body; everything searchable is in ``_s`` and ``_o``.

Searches (outside a unit of work) read matches, total and includes in one snapshot session on a
replica set; chains and ``_has`` run their staged queries in that session too.

Units of work. On a replica set (a single node is enough) a unit of work is one multi-document
transaction with snapshot reads and majority write concern: one resource write (current document +
history) and a whole transaction Bundle commit or roll back as one. MongoDB does not make a
transaction *wait* for a conflicting one: the later writer gets a ``WriteConflict`` labelled
``TransientTransactionError``. The caller's code runs inside ``async with store.transaction()``, which
cannot be re-run as a ``with_transaction`` callback, so the retry happens where it is safe: when the
*first* operation of a unit of work conflicts (nothing has been read or decided yet), the transaction
is aborted and restarted with jittered backoff, as ``with_transaction`` would. Reads inside a unit of
work take a write lock on the document (a no-op ``$inc``) so that read-modify-write units of work
serialise like SQLite's instead of failing at commit. A conflict later in a unit of work that has
already read or written (a transaction Bundle racing another) raises :class:`TransactionConflict`
(nothing was written): the api layer runs the whole request again a few times (api/limits.py), then
answers 503 with ``Retry-After``. Commits are retried on
``UnknownTransactionCommitResult`` (commit is idempotent).

On a standalone server (no transactions) start-up logs a warning; a unit of work is buffered and
applied at its end if it holds one resource write, and refused with an OperationOutcome (501) as
soon as it asks for a second one, before anything is written: never a partial transaction Bundle.

Reachability: ``open()`` does not fail when MongoDB is down (the server must start and answer 503);
every operation first makes sure indexes exist, and retries that on the next request until MongoDB
answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConfigurationError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from fhir_exchange.errors import Category, FhirError, TransactionConflict
from fhir_exchange.search.index import Indexer
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import deadline, mongo_search
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

log = logging.getLogger("fhir_exchange.store.mongo")

T = TypeVar("T")

HISTORY = "history"
LOCKS = "locks"
GRANTS = "grants"
MESSAGES = "messages"
RECORDS = "records"
CHANGES = "changes"
COUNTERS = "counters"
SCHEMA = "schema"  # one marker document: which index definitions were created for which collections
INTERNAL = frozenset({HISTORY, LOCKS, GRANTS, MESSAGES, CHANGES, COUNTERS, SCHEMA, RECORDS})
OWN = mongo_search.OWNER
HISTORY_INDEXES: list[tuple[list[tuple[str, int]], str]] = [
    ([("lu", DESCENDING)], "by_lastUpdated"),
    ([("t", ASCENDING), ("lu", DESCENDING)], "type_by_lastUpdated"),
    ([("t", ASCENDING), ("i", ASCENDING), ("v", DESCENDING)], "instance_by_version"),
]
GRANT_INDEXES: list[tuple[list[tuple[str, int]], str]] = [
    ([("g", ASCENDING), ("t", ASCENDING), ("i", ASCENDING)], "by_grantee"),
    ([("b", ASCENDING)], "by_basis"),
]
RECORD_INDEXES: list[tuple[list[tuple[str, int]], str]] = [
    ([("k", ASCENDING), ("n", ASCENDING)], "by_kind"),  # list_records: one kind in key order
    ([("x", ASCENDING)], "by_expiry"),  # purge_records
]
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")
_CURRENT = {"v": 1, "lu": 1, "del": 1, "body": 1, "m": 1, OWN: 1}
_HISTORY_FIELDS = {"t": 1, "i": 1, "v": 1, "lu": 1, "del": 1, "body": 1, "m": 1, OWN: 1}
_RETRY_AFTER_UNREACHABLE = 5
_RETRY_AFTER_CONFLICT = 1
_RESTART_BUDGET_S = 10.0  # how long a first-operation conflict is retried before answering 503
_COMMIT_BUDGET_S = 10.0  # how long an unknown commit result is retried
_LOCK_TTL_S = 3600  # lock documents are garbage after this (a conditional create takes milliseconds)
# Changes whenever an index definition changes, so that a start-up after an upgrade re-creates them.
INDEX_VERSION = hashlib.sha256(repr((HISTORY_INDEXES, mongo_search.TYPE_INDEXES, _LOCK_TTL_S, GRANT_INDEXES,
                                     (MESSAGES, CHANGES), RECORD_INDEXES)).encode()).hexdigest()[:16]
CHANGE_GAP_S = 60.0  # how long a gap in the change feed may still be filled by a commit (transaction lifetime)
_WRITE_CONFLICT = 112
_NO_SUCH_TRANSACTION = 251
_ILLEGAL_OPERATION = 20
_NAMESPACE_EXISTS = 48

MONGO_DEFAULT_DB = "fhir_exchange"
_MAX_INT = 2**62


_MULTIKEY_PROBE = "~multikey"


def _multikey_probe() -> dict[str, Any]:
    """A document with an array under every ``_s`` path a type index names (see _create_type_indexes)."""
    fields = {path.split(".")[1] for keys, _name in mongo_search.TYPE_INDEXES for path, _dir in keys
              if path.startswith("_s.")}
    return {"_s": {f: [{"p": "~"}, {"p": "~~"}] for f in sorted(fields)}}


def _transient(diagnostics: str, retry_after: int = _RETRY_AFTER_UNREACHABLE) -> FhirError:
    return FhirError(Category.TRANSIENT, diagnostics, headers={"Retry-After": str(retry_after)})


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in (_WRITE_CONFLICT, _NO_SUCH_TRANSACTION) or exc.has_error_label("TransientTransactionError")
    return False


_unreachable_logged = [-120.0]  # monotonic time of the last "unreachable" log line


def translate(exc: PyMongoError) -> FhirError:
    """The port's error for a driver error (the one translation table of this adapter)."""
    if isinstance(exc, ConnectionFailure | WaitQueueTimeoutError):  # includes ServerSelectionTimeoutError
        now = time.monotonic()
        if now - _unreachable_logged[0] >= 60.0:  # one line a minute while it lasts, not one per request
            _unreachable_logged[0] = now
            log.error("MongoDB is unreachable (requests are answered 503): %s: %s", type(exc).__name__,
                      str(exc).split(", Timeout:")[0][:300])
        return _transient(f"The database is unreachable: {type(exc).__name__}. Retry later.")
    if isinstance(exc, ExecutionTimeout):
        return _transient("The database did not answer in time. Retry later.")
    if isinstance(exc, DuplicateKeyError):
        return VersionConflict(f"A concurrent write created the same key: {exc.details or exc}")
    if isinstance(exc, DocumentTooLarge):
        return FhirError(Category.TOO_LARGE, f"The resource is too large for the database: {exc}", code="too-costly")
    if _is_conflict(exc):
        return TransactionConflict("A concurrent transaction wrote the same resources; nothing was written. "
                                   "Retry.", _RETRY_AFTER_CONFLICT)
    if isinstance(exc, OperationFailure) and exc.has_error_label("RetryableWriteError"):
        return _transient(f"The database is failing over: {exc}")
    return FhirError(Category.FAULT, f"Storage error: {type(exc).__name__}")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise translate(exc) from exc


def _version(doc: dict[str, Any], type: str, id: str) -> ResourceVersion:
    return ResourceVersion(type, id, doc["v"], doc["lu"], bool(doc["del"]), bytes(doc["body"]), doc.get("m", "PUT"),
                           doc.get(OWN))


def _hversion(doc: dict[str, Any]) -> ResourceVersion:
    return ResourceVersion(doc["t"], doc["i"], doc["v"], doc["lu"], bool(doc["del"]), bytes(doc["body"]),
                           doc.get("m", "PUT"), doc.get(OWN))


def _history_doc(version: ResourceVersion, deleted: bool) -> dict[str, Any]:
    return {"_id": history_id(version.type, version.id, version.version_id), "t": version.type, "i": version.id,
            "v": version.version_id, "lu": version.last_updated, "del": deleted,
            "m": "DELETE" if deleted else version.method, "body": b"" if deleted else version.body,
            OWN: version.owner}


def _change_doc(seq: int, at: datetime, version: ResourceVersion, deleted: bool) -> dict[str, Any]:
    return {"_id": seq, "t": version.type, "i": version.id, "v": version.version_id, "del": deleted,
            "lu": version.last_updated, "at": at}


def _duplicate_seq(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    return isinstance(exc, BulkWriteError) and any(e.get("code") == 11000
                                                   for e in exc.details.get("writeErrors", ()))


def _now() -> datetime:
    """UTC now as the driver returns BSON dates (``tz_aware=False``: naive UTC, milliseconds)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _grant_filter(vis: Visibility, type: str | None) -> dict[str, Any]:
    """Grants to one of ``vis.institutions`` valid at ``vis.at`` (on ``type`` when given)."""
    filt: dict[str, Any] = {"g": {"$in": sorted(vis.institutions)}}
    if type is not None:
        filt["t"] = type
    filt["$or"] = [{"u": None}, {"u": {"$gt": vis.at}}]
    return filt


def _grant_docs(basis: str, grants: Sequence[Grant]) -> list[dict[str, Any]]:
    return [{"b": basis, "g": g.grantee, "t": g.type, "i": g.id, "u": g.until} for g in grants]


def record_id(kind: str, key: str) -> str:
    return f"{kind}|{key}"


def _unexpired(now: str) -> dict[str, Any]:
    return {"$or": [{"x": None}, {"x": {"$gt": now}}]}


def _record(doc: dict[str, Any]) -> Record:
    return Record(doc["k"], doc["n"], bytes(doc["v"]), doc.get("x"))


def history_id(type: str, id: str, version_id: int) -> str:
    return f"{type}/{id}/_history/{version_id}"


def lock_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _refuse_multi_write() -> FhirError:
    return FhirError(
        Category.NOT_IMPLEMENTED,
        "This server's MongoDB is a standalone server, which has no multi-document transactions: a unit "
        "of work with more than one write (a transaction Bundle, a message) would not be atomic, so it is "
        "refused and nothing was written. Run MongoDB as a replica set (a single-node replica set is enough).",
        code="not-supported",
    )


def check_expected(type: str, id: str, cur: dict[str, Any] | None, expected_version: int) -> int:
    """Check ``expected_version`` against the current document; returns the current version id (0: none)."""
    current = 0 if cur is None else int(cur["v"])
    if expected_version == NEW and cur is not None and not cur["del"]:
        raise VersionConflict(f"{type}/{id} already exists")
    if expected_version not in (NEW, ANY) and expected_version != current:
        raise VersionConflict(
            f"Version conflict on {type}/{id}: expected version {expected_version}, current is {current}")
    return current


class _Sequence:
    """A process-local creation sequence (nanoseconds, strictly increasing): the tie-break of lists."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


class MongoUnitOfWork:
    """One multi-document transaction (replica set or sharded cluster)."""

    def __init__(self, store: MongoStore, session: AsyncClientSession) -> None:
        self._store = store
        self._session = session
        self._ops = 0
        self.writes = 0
        self._changes: list[tuple[ResourceVersion, bool]] = []  # (version, deleted) for the change feed

    async def begin(self) -> None:
        await self._session.start_transaction(
            read_concern=ReadConcern("snapshot"),
            write_concern=WriteConcern("majority"),
            read_preference=ReadPreference.PRIMARY,
        )

    async def abort(self) -> None:
        if self._session.in_transaction:
            with suppress(PyMongoError, InvalidOperation):  # the server aborts it anyway
                await self._session.abort_transaction()

    async def commit(self) -> None:
        if self.writes == 0:  # read-only (or only locks): nothing to make durable
            await self.abort()
            return
        store = self._store
        seqs: list[int] = []
        if self._changes:
            # The change feed's seqs: allocated outside the transaction, just before the commit (see the
            # module docstring), their documents written inside it.
            seqs, at = await store._allocate(len(self._changes))
            try:
                await store._changes.insert_many(
                    [_change_doc(n, at, v, d) for n, (v, d) in zip(seqs, self._changes, strict=True)],
                    session=self._session)
            except PyMongoError as exc:
                await self.abort()
                if _duplicate_seq(exc):
                    # The counter lost increments (a crash took an acknowledged $inc but kept committed
                    # records): move it past every stored seq; the client retries.
                    await store._repair_counter()
                    raise TransactionConflict("The change feed's counter was behind; nothing was written. "
                                              "Retry.", _RETRY_AFTER_CONFLICT) from exc
                await store._void(seqs)
                raise translate(exc) from exc
        deadline = time.monotonic() + _COMMIT_BUDGET_S
        while True:
            try:
                await self._session.commit_transaction()
                return
            except PyMongoError as exc:
                unknown = isinstance(exc, OperationFailure | ConnectionFailure) and exc.has_error_label(
                    "UnknownTransactionCommitResult")
                if unknown and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    continue
                await self.abort()
                await store._void(seqs)
                raise translate(exc) from exc

    async def _op(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one operation; if it is the first and conflicts, restart the transaction and retry."""
        first = self._ops == 0
        self._ops += 1
        deadline = time.monotonic() + _RESTART_BUDGET_S
        delay = 0.002
        while True:
            try:
                return await fn()
            except PyMongoError as exc:
                if not (first and _is_conflict(exc)) or time.monotonic() > deadline:
                    raise translate(exc) from exc
            await self.abort()
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.1)
            with _translated():
                await self.begin()

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        coll = await self._store._type_coll(type)
        s = self._session

        async def go() -> ResourceVersion | None:
            # The $inc takes the document's write lock for this transaction: a concurrent unit of work
            # that read the same resource to write it conflicts now (and restarts) instead of later.
            doc = await coll.find_one_and_update({"_id": id}, {"$inc": {"_lk": 1}}, projection=_CURRENT, session=s,
                                                 return_document=ReturnDocument.AFTER)
            if doc is None:
                await self._store._locks.update_one(
                    {"_id": lock_id(f"resource {type}/{id}")}, {"$set": {"at": datetime.now(UTC)}},
                    upsert=True, session=s)
                return None
            return _version(doc, type, id)

        return await self._op(go)

    async def put(self, version: ResourceVersion, resource: dict[str, Any], *, expected_version: int) -> None:
        store = self._store
        entries = await extract_entries(store._indexer, version, resource)  # a big resource's off the loop
        coll = await store._type_coll(version.type)
        s = self._session
        fields = {"v": version.version_id, "lu": version.last_updated, "del": False, "m": version.method,
                  "body": version.body, OWN: version.owner, **mongo_search.stored_fields(version.id, entries)}

        async def go() -> None:
            cur = await coll.find_one({"_id": version.id}, {"v": 1, "del": 1}, session=s)
            current = check_expected(version.type, version.id, cur, expected_version)
            if version.version_id <= current:
                raise VersionConflict(f"{version.type}/{version.id} moved on to version {current}")
            if cur is None:
                await coll.insert_one({"_id": version.id, **fields, "_c": store._seq.next()}, session=s)
            elif await coll.find_one_and_update({"_id": version.id, "v": current}, {"$set": fields},
                                                projection={"_id": 1}, session=s) is None:
                raise VersionConflict(f"{version.type}/{version.id} changed concurrently")
            await store._history.insert_one(_history_doc(version, False), session=s)

        await self._op(go)
        self.writes += 1
        self._changes.append((version, False))

    async def delete(self, version: ResourceVersion, *, expected_version: int) -> None:
        store = self._store
        coll = await store._type_coll(version.type)
        s = self._session

        async def go() -> bool:
            cur = await coll.find_one({"_id": version.id}, {"v": 1, "del": 1}, session=s)
            current = check_expected(version.type, version.id, cur, expected_version)
            if cur is None:
                return False
            done = await coll.find_one_and_update(
                {"_id": version.id, "v": current},
                {"$set": {"v": version.version_id, "lu": version.last_updated, "del": True, "m": "DELETE",
                          "body": b"", OWN: version.owner}, "$unset": mongo_search.UNSET},
                projection={"_id": 1}, session=s)
            if done is None:
                raise VersionConflict(f"{version.type}/{version.id} changed concurrently")
            await store._history.insert_one(_history_doc(version, True), session=s)
            return True

        if await self._op(go):
            self.writes += 1
            self._changes.append((version, True))

    async def search(self, query: Any) -> SearchResult:
        return await self._op(lambda: self._store._search(query, self._session))

    async def lock_key(self, key: str) -> None:
        await self._op(lambda: self._store._locks.update_one(
            {"_id": lock_id(key)}, {"$set": {"at": datetime.now(UTC)}}, upsert=True, session=self._session))

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        return await self._op(lambda: self._store._granted_one(visibility, type, id, self._session))

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        grants_coll, s = self._store._grants, self._session
        docs = _grant_docs(basis, grants)

        async def go() -> None:
            await grants_coll.delete_many({"b": basis}, session=s)
            if docs:
                await grants_coll.insert_many([dict(d) for d in docs], session=s)

        await self._op(go)
        self.writes += 1

    async def read_message(self, key: str) -> MessageRecord | None:
        doc = await self._op(lambda: self._store._messages.find_one({"_id": key}, session=self._session))
        return None if doc is None else MessageRecord(doc["_id"], doc["digest"], bytes(doc["body"]))

    async def write_message(self, record: MessageRecord) -> None:
        messages, s = self._store._messages, self._session

        async def go() -> None:
            # Checked first: a duplicate key on the first operation would be retried as a conflict.
            if await messages.find_one({"_id": record.key}, {"_id": 1}, session=s) is not None:
                raise VersionConflict(f"An answer to message {record.key} is already stored")
            await messages.insert_one({"_id": record.key, "digest": record.digest, "body": record.body,
                                       "at": datetime.now(UTC)}, session=s)

        await self._op(go)
        self.writes += 1


class StandaloneUnitOfWork:
    """A unit of work on a standalone server: at most one write, applied at the end.

    Nothing is written before the unit of work ends, so a refused second write leaves no trace. A write
    is a resource put or delete, a grant replacement or a message answer: each is one write here, as a
    unit of work holding two would not be atomic. Conditional creates serialise on a lock document held
    (insert, then delete) for the unit of work.
    """

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._pending: tuple[str, ResourceVersion, dict[str, Any] | None, int] | None = None
        self._grants: tuple[str, list[Grant]] | None = None
        self._message: MessageRecord | None = None
        self._locks: list[str] = []

    def _refuse_second(self) -> None:
        if self._pending is not None or self._grants is not None or self._message is not None:
            raise _refuse_multi_write()

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        if self._pending is not None and (self._pending[1].type, self._pending[1].id) == (type, id):
            return self._pending[1]
        return await self._store.read(type, id)

    async def _queue(self, op: str, version: ResourceVersion, resource: dict[str, Any] | None,
                     expected_version: int) -> None:
        self._refuse_second()
        coll = await self._store._type_coll(version.type)
        with _translated():
            cur = await coll.find_one({"_id": version.id}, {"v": 1, "del": 1})
        check_expected(version.type, version.id, cur, expected_version)
        self._pending = (op, version, resource, expected_version)

    async def put(self, version: ResourceVersion, resource: dict[str, Any], *, expected_version: int) -> None:
        await self._queue("put", version, resource, expected_version)

    async def delete(self, version: ResourceVersion, *, expected_version: int) -> None:
        await self._queue("delete", version, None, expected_version)

    async def search(self, query: Any) -> SearchResult:
        return await self._store.search(query)

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        if self._grants is None:
            return await self._store.granted(visibility, type, id)
        basis, grants = self._grants  # the pending replacement, over the other bases' stored grants
        if any(g.grantee in visibility.institutions and (g.type, g.id) == (type, id)
               and (g.until is None or g.until > visibility.at) for g in grants):
            return True
        if not visibility.institutions:
            return False
        filt = {**_grant_filter(visibility, type), "i": id, "b": {"$ne": basis}}
        with _translated():
            return await self._store._grants.find_one(filt, {"_id": 1}) is not None

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        self._refuse_second()
        self._grants = (basis, list(grants))

    async def read_message(self, key: str) -> MessageRecord | None:
        if self._message is not None and self._message.key == key:
            return self._message
        await self._store._ensure_ready()
        with _translated():
            doc = await self._store._messages.find_one({"_id": key})
        return None if doc is None else MessageRecord(doc["_id"], doc["digest"], bytes(doc["body"]))

    async def write_message(self, record: MessageRecord) -> None:
        self._refuse_second()
        if await self.read_message(record.key) is not None:
            raise VersionConflict(f"An answer to message {record.key} is already stored")
        self._message = record

    async def lock_key(self, key: str) -> None:
        lid = lock_id(key)
        deadline = time.monotonic() + _RESTART_BUDGET_S
        while True:
            try:
                with _translated():
                    await self._store._locks.insert_one({"_id": lid, "at": datetime.now(UTC), "held": True})
                self._locks.append(lid)
                return
            except VersionConflict:
                # Held by another unit of work; take it over if its holder died (older than a minute).
                stale = datetime.fromtimestamp(time.time() - 60, UTC)
                with _translated():
                    await self._store._locks.delete_one({"_id": lid, "at": {"$lt": stale}})
                if time.monotonic() > deadline:
                    raise _transient("A concurrent conditional write holds the same criteria. Retry.",
                                     _RETRY_AFTER_CONFLICT) from None
                await asyncio.sleep(random.uniform(0.001, 0.02))

    async def finish(self, commit: bool) -> None:
        try:
            if commit and self._pending is not None:
                await self._apply_with_change(*self._pending)
            elif commit and self._grants is not None:
                basis, grants = self._grants
                await self._store._grants.delete_many({"b": basis})
                if grants:
                    await self._store._grants.insert_many(_grant_docs(basis, grants))
            elif commit and self._message is not None:
                m = self._message
                await self._store._messages.insert_one({"_id": m.key, "digest": m.digest, "body": m.body,
                                                        "at": datetime.now(UTC)})
        finally:
            for lid in self._locks:
                with _translated():
                    await self._store._locks.delete_one({"_id": lid})

    async def _apply_with_change(self, op: str, version: ResourceVersion, resource: dict[str, Any] | None,
                                 expected_version: int) -> None:
        """Apply the write and its change record: the seq is allocated first (as a transaction's is,
        before its commit) and voided if the write fails."""
        store = self._store
        seqs, at = await store._allocate(1)
        try:
            written = await self._apply(op, version, resource, expected_version)
        except BaseException:
            await store._void(seqs)
            raise
        if not written:
            await store._void(seqs)
            return
        try:
            await store._changes.insert_one(_change_doc(seqs[0], at, version, op == "delete"))
        except PyMongoError:
            # The write is done: a missing record is a gap the feed skips after the bound.
            log.exception("MongoDB store: the change record %s of %s/%s was not written", seqs[0], version.type,
                          version.id)

    async def _apply(self, op: str, version: ResourceVersion, resource: dict[str, Any] | None,
                     expected_version: int) -> bool:
        # The current document is the arbiter (one atomic find_one_and_update on the version); the
        # history document follows. A crash in between loses that history entry, which is why
        # production deployments run a replica set.
        store = self._store
        coll = await store._type_coll(version.type)
        cur = await coll.find_one({"_id": version.id}, {"v": 1, "del": 1})
        current = check_expected(version.type, version.id, cur, expected_version)
        if op == "delete" and cur is None:
            return False
        if version.version_id <= current:
            raise VersionConflict(f"{version.type}/{version.id} moved on to version {current}")
        if op == "put":
            assert resource is not None
            entries = store._indexer(version.type, resource) if store._indexer else ()
            update: dict[str, Any] = {"$set": {"v": version.version_id, "lu": version.last_updated, "del": False,
                                               "m": version.method, "body": version.body, OWN: version.owner,
                                               **mongo_search.stored_fields(version.id, entries)}}
        else:
            update = {"$set": {"v": version.version_id, "lu": version.last_updated, "del": True, "m": "DELETE",
                               "body": b"", OWN: version.owner}, "$unset": mongo_search.UNSET}
        if cur is None:
            doc = {"_id": version.id, **update["$set"], "_c": store._seq.next()}
            await coll.insert_one(doc)
        elif await coll.find_one_and_update({"_id": version.id, "v": current}, update,
                                            projection={"_id": 1}) is None:
            raise VersionConflict(f"{version.type}/{version.id} changed concurrently")
        await store._history.insert_one(_history_doc(version, op == "delete"))
        return True


class MongoStore:
    name = "mongodb"

    def __init__(self, url: str, indexer: Indexer | None = None, *, database: str | None = None,
                 server_selection_timeout_ms: int = 3000, resource_types: Iterable[str] = (),
                 change_gap_s: float = CHANGE_GAP_S) -> None:
        self.url = url
        self.change_gap_s = change_gap_s  # how long a gap in the change feed is waited for (see above)
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
            with _translated():
                hello = await self._client.admin.command("hello")
                self.supports_transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
                existing = set(await self._db.list_collection_names())
                names = {n for n in {*existing, *self._resource_types} if n not in INTERNAL and _TYPE_RE.match(n)}
                marker = await self._db[SCHEMA].find_one({"_id": "indexes"})
                if (marker is not None and marker.get("version") == INDEX_VERSION and names <= existing
                        and names <= set(marker.get("types", ()))):
                    self._indexed |= names  # created by an earlier start with the same index definitions
                else:
                    await self._create_shared_indexes(existing)
                    ordered = sorted(names)
                    for start in range(0, len(ordered), 16):  # pipelined: start-up costs round trips
                        await asyncio.gather(*(self._create_type_indexes(n) for n in ordered[start:start + 16]))
                    await self._db[SCHEMA].replace_one(
                        {"_id": "indexes"}, {"version": INDEX_VERSION, "types": ordered}, upsert=True)
            if self.supports_transactions:
                log.info("MongoDB store %s: replica set, transactions enabled", self._db.name)
            else:
                log.warning("MongoDB store %s: STANDALONE server without transactions; units of work with more "
                            "than one write (transaction Bundles, messages) will be refused. Run a replica set.",
                            self._db.name)
            self._ready = True

    async def _create_shared_indexes(self, existing: set[str]) -> None:
        for keys, name in HISTORY_INDEXES:
            await self._history.create_index(keys, name=name)
        await self._locks.create_index("at", name="expire", expireAfterSeconds=_LOCK_TTL_S)
        for keys, name in GRANT_INDEXES:
            await self._grants.create_index(keys, name=name)
        for keys, name in RECORD_INDEXES:
            await self._records.create_index(keys, name=name)
        # Written inside transactions: they must exist before one starts (see set_resource_types).
        for name in (MESSAGES, CHANGES):
            if name not in existing:
                try:
                    await self._db.create_collection(name)
                except CollectionInvalid:
                    pass
                except OperationFailure as exc:
                    if exc.code != _NAMESPACE_EXISTS:  # another process created it meanwhile
                        raise

    async def _create_type_indexes(self, type: str) -> None:
        coll = self._db[type]
        await coll.create_indexes([IndexModel(keys, name=name) for keys, name in mongo_search.TYPE_INDEXES])
        # Every ``_s`` index is multikey. The first array document a transaction inserts flips the index's
        # multikey flag in the catalog, and concurrent transactions doing so on a new collection all write
        # that one catalog entry: all but one got a WriteConflict (12% of concurrent create-only
        # transaction Bundles, issue 14). Flipping it here, outside any transaction, with a document no
        # search can see (no ``del``; "~" is no FHIR id character), removes that shared write.
        await coll.replace_one({"_id": _MULTIKEY_PROBE}, _multikey_probe(), upsert=True)
        await coll.delete_one({"_id": _MULTIKEY_PROBE})
        self._indexed.add(type)

    async def _type_coll(self, type: str) -> AsyncCollection[dict[str, Any]]:
        """The collection of a resource type, its indexes created (outside any transaction) on first use."""
        if not _TYPE_RE.match(type):
            raise FhirError(Category.INVALID, f"'{type}' is not a resource type name")
        await self._ensure_ready()
        if type not in self._indexed:
            with _translated():
                await self._create_type_indexes(type)
        return self._db[type]

    async def _type_names(self) -> list[str]:
        await self._ensure_ready()
        with _translated():
            names = await self._db.list_collection_names()
        return sorted(n for n in names if n not in INTERNAL and _TYPE_RE.match(n))

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
            with _translated():
                await suow.finish(commit=True)
            return
        with _translated():
            session = self.client.start_session(causal_consistency=False)
        try:
            uow = MongoUnitOfWork(self, session)
            with _translated():
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
        with self._within(deadline.for_read(self.search_timeout)), _translated():
            doc = await coll.find_one({"_id": id}, _CURRENT)
        return None if doc is None else _version(doc, type, id)

    async def vread(self, type: str, id: str, version_id: int) -> ResourceVersion | None:
        await self._ensure_ready()
        with self._within(deadline.for_read(self.search_timeout)), _translated():
            doc = await self._history.find_one({"_id": history_id(type, id, version_id)}, _HISTORY_FIELDS)
        return None if doc is None else _hversion(doc)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        await self._ensure_ready()
        match: dict[str, Any] = {}
        if query.type:
            match["t"] = query.type
        if query.id:
            match["i"] = query.id
        lu: dict[str, str] = {}
        if query.since:
            lu["$gte"] = query.since
        if query.till:
            lu["$lte"] = query.till
        if query.at:
            lu["$lte"] = min(query.at, lu.get("$lte", query.at))
        if lu:
            match["lu"] = lu
        sort = {"lu": -1, "t": 1, "i": 1, "v": -1}
        vis: dict[str, Any] | None = None
        if query.visibility is not None:
            # Each version as stored (its own owner); grants and shared types by (type, id).
            vis = await mongo_search.history_clause(query.visibility, query.type, self._granted_keys(None))
            if vis is mongo_search.FALSE:
                return HistoryPage([], 0)
        with self._within(), _translated():
            if query.at:
                # Versions current at that instant: per resource, the newest version not after it.
                head: list[dict[str, Any]] = [
                    {"$match": match}, {"$sort": {"t": 1, "i": 1, "v": -1}},
                    {"$group": {"_id": {"t": "$t", "i": "$i"}, "doc": {"$first": "$$ROOT"}}},
                    {"$replaceRoot": {"newRoot": "$doc"}},
                ]
                if query.since:
                    head.append({"$match": {"lu": {"$gte": query.since}}})
                if vis is not None:  # on the version current then, not before choosing it
                    head.append({"$match": vis})
                counted = await (await self._history.aggregate([*head, {"$count": "n"}])).to_list()
                total = counted[0]["n"] if counted else 0
                docs = [] if query.count <= 0 else await (await self._history.aggregate(
                    [*head, {"$sort": sort}, {"$skip": query.offset}, {"$limit": query.count}])).to_list()
            else:
                if vis is not None:
                    match = mongo_search.all_of(match, vis)
                total = await self._history.count_documents(match)
                docs = [] if query.count <= 0 else await self._history.find(match, _HISTORY_FIELDS).sort(
                    list(sort.items())).skip(query.offset).limit(query.count).to_list()
        return HistoryPage([_hversion(d) for d in docs], total)

    def _finder(self, session: AsyncClientSession | None) -> mongo_search.Find:
        """The staged-query callback of the search compiler, on this search's session (snapshot)."""

        async def find(type: str, filt: dict[str, Any], projection: dict[str, Any]) -> list[dict[str, Any]]:
            coll = await self._type_coll(type)
            with _translated():
                return await coll.find(filt, projection, session=session).to_list()

        return find

    def _granted_keys(self, session: AsyncClientSession | None) -> mongo_search.Granted:
        """The grant-staging callback of the search compiler: (type, id) granted, on this session."""

        async def granted(vis: Visibility, type: str | None) -> list[tuple[str, str]]:
            if not vis.institutions:
                return []
            with _translated():
                return [(d["t"], d["i"]) async for d in
                        self._grants.find(_grant_filter(vis, type), {"t": 1, "i": 1, "_id": 0}, session=session)]

        return granted

    async def _granted_one(self, vis: Visibility, type: str, id: str, session: AsyncClientSession | None) -> bool:
        if not vis.institutions:
            return False
        return await self._grants.find_one({**_grant_filter(vis, type), "i": id}, {"_id": 1},
                                           session=session) is not None

    async def granted(self, visibility: Visibility, type: str, id: str) -> bool:
        await self._ensure_ready()
        with _translated():
            return await self._granted_one(visibility, type, id, None)

    # -- internal records -------------------------------------------------------------------------

    async def get_record(self, kind: str, key: str, *, now: str) -> Record | None:
        await self._ensure_ready()
        with _translated():
            doc = await self._records.find_one({"_id": record_id(kind, key), "k": kind, **_unexpired(now)})
        return None if doc is None else _record(doc)

    async def put_record(self, record: Record, *, if_absent: bool = False, now: str = "") -> bool:
        await self._ensure_ready()
        rid = record_id(record.kind, record.key)
        fields = {"k": record.kind, "n": record.key, "v": record.value, "x": record.expires}
        # An expired record (x <= now; a null x never is) is replaced; an unexpired one does not match, so
        # the upsert inserts and the _id makes that a duplicate key: not written.
        filt: dict[str, Any] = {"_id": rid, "x": {"$lte": now}} if if_absent else {"_id": rid}
        for _attempt in range(3):
            try:
                await self._records.update_one(filt, {"$set": fields}, upsert=True)
                return True
            except DuplicateKeyError:
                if if_absent:
                    return False
                # A plain upsert raced another one's insert: the document exists now, the next one updates it.
            except PyMongoError as exc:
                raise translate(exc) from exc
        raise _transient(f"The record {rid} is being written concurrently; it was not written. Retry.",
                         _RETRY_AFTER_CONFLICT)

    async def delete_record(self, kind: str, key: str) -> bool:
        await self._ensure_ready()
        with _translated():
            return (await self._records.delete_one({"_id": record_id(kind, key), "k": kind})).deleted_count > 0

    async def list_records(self, kind: str, *, now: str) -> list[Record]:
        await self._ensure_ready()
        with _translated():
            docs = await self._records.find({"k": kind, **_unexpired(now)}).sort("n", ASCENDING).to_list()
        return [_record(d) for d in docs]

    async def purge_records(self, now: str) -> int:
        await self._ensure_ready()
        with _translated():
            return (await self._records.delete_many({"x": {"$lte": now}})).deleted_count

    # -- change feed ------------------------------------------------------------------------------

    async def _allocate(self, n: int) -> tuple[list[int], datetime]:
        """A block of ``n`` change seqs (one atomic $inc, outside any transaction) and its allocation time."""
        doc: dict[str, Any] | None = None
        with _translated():
            for attempt in range(3):
                try:
                    doc = await self._counters.find_one_and_update(
                        {"_id": CHANGES}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER)
                except DuplicateKeyError:  # two first allocations raced on the upsert: the document exists now
                    if attempt == 2:
                        raise
                    continue
                if doc is not None:  # SecantusDB may answer None to concurrent first upserts: ask again
                    break
        if doc is None:
            raise TransactionConflict("The change feed's counter could not be allocated; nothing was written. "
                                      "Retry.", _RETRY_AFTER_CONFLICT)
        top = int(doc["n"])
        return list(range(top - n + 1, top + 1)), _now()

    async def _repair_counter(self) -> None:
        with suppress(PyMongoError):
            top = await self._changes.find_one({}, {"_id": 1}, sort=[("_id", -1)])
            if top is not None:
                await self._counters.update_one({"_id": CHANGES}, {"$max": {"n": int(top["_id"])}}, upsert=True)

    async def _void(self, seqs: Sequence[int]) -> None:
        """Close the gap of seqs whose writes were not committed (best effort; a duplicate key means the
        real record is there after all)."""
        if not seqs:
            return
        at = _now()
        with suppress(PyMongoError):
            await self._changes.insert_many([{"_id": n, "void": True, "at": at} for n in seqs], ordered=False)

    async def changes(self, after: int, limit: int = 1000) -> list[ChangeRecord]:
        """Committed writes with ``seq > after``: the contiguous prefix only (see the module docstring)."""
        await self._ensure_ready()
        out: list[ChangeRecord] = []
        if limit <= 0:
            return out
        expected = after + 1
        cutoff = _now() - timedelta(seconds=self.change_gap_s)
        cursor = after
        with _translated():
            while True:
                docs = await self._changes.find({"_id": {"$gt": cursor}}).sort("_id", 1).limit(
                    max(limit - len(out), 0) + 16).to_list()
                if not docs:
                    return out
                for d in docs:
                    if d["_id"] != expected and d["at"] >= cutoff:
                        return out  # a gap that a transaction may still fill
                    expected = d["_id"] + 1
                    if not d.get("void"):
                        out.append(ChangeRecord(d["_id"], d["t"], d["i"], d["v"], bool(d["del"]), d["lu"]))
                        if len(out) >= limit:
                            return out
                cursor = docs[-1]["_id"]

    async def last_change(self) -> int:
        """The end of the contiguous prefix of the feed: a reader starting here misses no later commit."""
        await self._ensure_ready()
        cutoff = _now() - timedelta(seconds=self.change_gap_s)
        young: list[int] = []
        base = 0
        with _translated():
            # Newest first, down to the first record older than the bound: every gap below it is closed.
            async for d in self._changes.find({}, {"at": 1}).sort("_id", -1):
                if d["at"] < cutoff:
                    base = d["_id"]
                    break
                young.append(d["_id"])
        for n in reversed(young):
            if n != base + 1:
                break
            base = n
        return base

    async def _load(self, keys: Sequence[tuple[str, str]], session: AsyncClientSession | None,
                    ) -> list[ResourceVersion]:
        by_type: dict[str, list[str]] = {}
        for t, i in keys:
            by_type.setdefault(t, []).append(i)
        found: dict[tuple[str, str], ResourceVersion] = {}
        with _translated():
            for t, ids in by_type.items():
                async for d in self._db[t].find({"_id": {"$in": ids}}, _CURRENT, session=session):
                    found[(t, d["_id"])] = _version(d, t, d["_id"])
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
        count = min(max(query.count, 0), _MAX_INT)
        offset = min(query.offset, _MAX_INT)  # BSON integers are 64-bit
        want = offset + count
        count_total = query.total != "none"
        total = 0
        rows: list[dict[str, Any]] = []
        single = len(types) == 1
        with _translated():
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
        with _translated():
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
        with _translated():
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
            with _translated():
                async for doc in coll.find({"del": False}, {"body": 1, "v": 1}):
                    entries = indexer(t, orjson.loads(doc["body"]))
                    # Guarded by the version: a concurrent update re-indexes itself.
                    await coll.update_one({"_id": doc["_id"], "v": doc["v"]},
                                          {"$set": mongo_search.stored_fields(doc["_id"], entries)})
                    n += 1
        return n

    async def import_versions(self, versions: Sequence[ResourceVersion]) -> int:
        """Bulk-load versions exactly as they are (``fhir-exchange migrate``); returns how many were new.

        History documents already present are skipped and a current document only ever moves forward to
        a newer version, so an interrupted migration can simply be run again. Meant for an offline
        copy: it does not take the per-resource locks that units of work take.
        """
        if not versions:
            return 0
        await self._ensure_ready()
        newest: dict[tuple[str, str], ResourceVersion] = {}
        for v in versions:
            key = (v.type, v.id)
            if key not in newest or v.version_id > newest[key].version_id:
                newest[key] = v
        docs = [_history_doc(v, v.deleted) for v in versions]
        inserted = len(docs)
        try:
            await self._history.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise translate(exc) from exc
            inserted -= len(errors)
        except PyMongoError as exc:
            raise translate(exc) from exc
        for (type, id), v in newest.items():
            coll = await self._type_coll(type)
            fields: dict[str, Any] = {"v": v.version_id, "lu": v.last_updated, "del": v.deleted,
                                      "m": "DELETE" if v.deleted else v.method, "body": b"" if v.deleted else v.body,
                                      OWN: v.owner}
            update: dict[str, Any] = {"$set": fields}
            if v.deleted:
                update["$unset"] = mongo_search.UNSET
            else:
                entries = self._indexer(type, orjson.loads(v.body)) if self._indexer else ()
                fields.update(mongo_search.stored_fields(id, entries))
            with _translated():
                cur = await coll.find_one({"_id": id}, {"v": 1})
                if cur is None:
                    await coll.insert_one({"_id": id, **fields, "_c": self._seq.next()})
                elif cur["v"] < v.version_id:
                    await coll.update_one({"_id": id, "v": cur["v"]}, update)
        return inserted

    async def all_versions(self) -> AsyncIterator[ResourceVersion]:
        """Every stored version of every resource, oldest first per resource (for migration checks)."""
        await self._ensure_ready()
        with _translated():
            async for d in self._history.find({}, _HISTORY_FIELDS).sort([("t", 1), ("i", 1), ("v", 1)]):
                yield _hversion(d)
