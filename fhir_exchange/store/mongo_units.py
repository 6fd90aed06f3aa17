"""The MongoDB store's units of work: reads, writes, locks, grants and message answers that commit or
roll back together.

On a replica set (a single node is enough) a unit of work (:class:`MongoUnitOfWork`) is one
multi-document transaction with snapshot reads and majority write concern: one resource write (current
document + history) and a whole transaction Bundle commit or roll back as one. MongoDB does not make a
transaction *wait* for a conflicting one: the later writer gets a ``WriteConflict`` labelled
``TransientTransactionError``. The caller's code runs inside ``async with store.transaction()``, which
cannot be re-run as a ``with_transaction`` callback, so the retry happens where it is safe: when the
*first* operation of a unit of work conflicts (nothing has been read or decided yet), the transaction
is aborted and restarted with jittered backoff, as ``with_transaction`` would. Reads inside a unit of
work take a write lock on the document (a no-op ``$inc``) so that read-modify-write units of work
serialise like SQLite's instead of failing at commit. A conflict later in a unit of work that has
already read or written (a transaction Bundle racing another) raises :class:`TransactionConflict`
(nothing was written): the api layer runs the whole request again a few times (api/limits.py), then
answers 503 with ``Retry-After``. Commits are retried on ``UnknownTransactionCommitResult`` (commit is
idempotent). The change documents of its writes are inserted in the transaction, with seqs allocated
just before the commit (:mod:`fhir_exchange.store.mongo_changes`).

On a standalone server (no transactions) a unit of work (:class:`StandaloneUnitOfWork`) is buffered and
applied at its end if it holds one resource write, and refused with an OperationOutcome (501) as soon as
it asks for a second one, before anything is written: never a partial transaction Bundle.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure, InvalidOperation, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from fhir_exchange.errors import Category, FhirError, TransactionConflict
from fhir_exchange.search.query import Visibility
from fhir_exchange.store import mongo_changes, mongo_records, mongo_search
from fhir_exchange.store.mongo_schema import (
    CURRENT,
    OWN,
    RETRY_AFTER_CONFLICT,
    history_doc,
    is_conflict,
    lock_id,
    log,
    transient,
    translate,
    translated,
    version_of,
)
from fhir_exchange.store.offload import extract_entries
from fhir_exchange.store.port import ANY, NEW, Grant, MessageRecord, ResourceVersion, SearchResult, VersionConflict

if TYPE_CHECKING:
    from fhir_exchange.store.mongo import MongoStore

T = TypeVar("T")

_RESTART_BUDGET_S = 10.0  # how long a first-operation conflict is retried before answering 503
_COMMIT_BUDGET_S = 10.0  # how long an unknown commit result is retried


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
            # The change feed's seqs: allocated outside the transaction, just before the commit
            # (store/mongo_changes.py), their documents written inside it.
            seqs, at = await store._allocate(len(self._changes))
            try:
                await store._changes.insert_many(
                    [mongo_changes.change_doc(n, at, v, d) for n, (v, d) in zip(seqs, self._changes, strict=True)],
                    session=self._session)
            except PyMongoError as exc:
                await self.abort()
                if mongo_changes.duplicate_seq(exc):
                    # The counter lost increments (a crash took an acknowledged $inc but kept committed
                    # records): move it past every stored seq; the client retries.
                    await store._repair_counter()
                    raise TransactionConflict("The change feed's counter was behind; nothing was written. "
                                              "Retry.", RETRY_AFTER_CONFLICT) from exc
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
                if not (first and is_conflict(exc)) or time.monotonic() > deadline:
                    raise translate(exc) from exc
            await self.abort()
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.1)
            with translated():
                await self.begin()

    async def read(self, type: str, id: str) -> ResourceVersion | None:
        coll = await self._store._type_coll(type)
        s = self._session

        async def go() -> ResourceVersion | None:
            # The $inc takes the document's write lock for this transaction: a concurrent unit of work
            # that read the same resource to write it conflicts now (and restarts) instead of later.
            doc = await coll.find_one_and_update({"_id": id}, {"$inc": {"_lk": 1}}, projection=CURRENT, session=s,
                                                 return_document=ReturnDocument.AFTER)
            if doc is None:
                await self._store._locks.update_one(
                    {"_id": lock_id(f"resource {type}/{id}")}, {"$set": {"at": datetime.now(UTC)}},
                    upsert=True, session=s)
                return None
            return version_of(doc, type, id)

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
            await store._history.insert_one(history_doc(version, False), session=s)

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
            await store._history.insert_one(history_doc(version, True), session=s)
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
        return await self._op(lambda: mongo_records.granted_one(self._store._grants, visibility, type, id,
                                                                self._session))

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        grants_coll, s = self._store._grants, self._session
        docs = mongo_records.grant_docs(basis, grants)

        async def go() -> None:
            await grants_coll.delete_many({"b": basis}, session=s)
            if docs:
                await grants_coll.insert_many([dict(d) for d in docs], session=s)

        await self._op(go)
        self.writes += 1

    async def read_message(self, key: str) -> MessageRecord | None:
        return mongo_records.message_of(
            await self._op(lambda: self._store._messages.find_one({"_id": key}, session=self._session)))

    async def write_message(self, record: MessageRecord) -> None:
        messages, s = self._store._messages, self._session

        async def go() -> None:
            # Checked first: a duplicate key on the first operation would be retried as a conflict.
            if await messages.find_one({"_id": record.key}, {"_id": 1}, session=s) is not None:
                raise VersionConflict(f"An answer to message {record.key} is already stored")
            await messages.insert_one(mongo_records.message_doc(record), session=s)

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
        with translated():
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
        filt = {**mongo_records.grant_filter(visibility, type), "i": id, "b": {"$ne": basis}}
        with translated():
            return await self._store._grants.find_one(filt, {"_id": 1}) is not None

    async def replace_grants(self, basis: str, grants: Sequence[Grant]) -> None:
        self._refuse_second()
        self._grants = (basis, list(grants))

    async def read_message(self, key: str) -> MessageRecord | None:
        if self._message is not None and self._message.key == key:
            return self._message
        await self._store._ensure_ready()
        with translated():
            return mongo_records.message_of(await self._store._messages.find_one({"_id": key}))

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
                with translated():
                    await self._store._locks.insert_one({"_id": lid, "at": datetime.now(UTC), "held": True})
                self._locks.append(lid)
                return
            except VersionConflict:
                # Held by another unit of work; take it over if its holder died (older than a minute).
                stale = datetime.fromtimestamp(time.time() - 60, UTC)
                with translated():
                    await self._store._locks.delete_one({"_id": lid, "at": {"$lt": stale}})
                if time.monotonic() > deadline:
                    raise transient("A concurrent conditional write holds the same criteria. Retry.",
                                    RETRY_AFTER_CONFLICT) from None
                await asyncio.sleep(random.uniform(0.001, 0.02))

    async def finish(self, commit: bool) -> None:
        try:
            if commit and self._pending is not None:
                await self._apply_with_change(*self._pending)
            elif commit and self._grants is not None:
                basis, grants = self._grants
                await self._store._grants.delete_many({"b": basis})
                if grants:
                    await self._store._grants.insert_many(mongo_records.grant_docs(basis, grants))
            elif commit and self._message is not None:
                await self._store._messages.insert_one(mongo_records.message_doc(self._message))
        finally:
            for lid in self._locks:
                with translated():
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
            await store._changes.insert_one(mongo_changes.change_doc(seqs[0], at, version, op == "delete"))
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
        await store._history.insert_one(history_doc(version, op == "delete"))
        return True
