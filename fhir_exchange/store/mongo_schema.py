"""The MongoDB store's database: its collections, their documents and indexes, and what driver errors
mean to a client.

Layout (docs/scaling.md explains the sharded form):

- one collection per resource type, ``_id`` = the logical id, with ``v`` (versionId), ``lu``
  (lastUpdated, a FHIR instant: sortable as text), ``del``, ``m`` (method), ``body``, ``_c`` (creation
  sequence: the order of unsorted results), ``_s`` and ``_o`` (the search and sort values, see
  :mod:`fhir_exchange.store.mongo_search`);
- ``history``: insert-only, ``_id`` = ``Type/id/_history/n``, every version including delete markers;
- ``locks``: one small document per conditional-create key (``_id`` = SHA-256 of the key), written
  inside the transaction so that concurrent identical conditional creates conflict and serialise;
- ``own`` on current and history documents: the owner (institution) of that version;
- ``grants``, ``messages``, ``records``: :mod:`fhir_exchange.store.mongo_records`;
- ``changes`` and ``counters``: the change feed, :mod:`fhir_exchange.store.mongo_changes`;
- ``schema``: one marker document naming the index definitions created and for which types, so that a
  start-up with the same definitions skips creating them (:data:`INDEX_VERSION` changes with them).

The body is stored as BSON binary: the exact JSON bytes the server serialised once with orjson.
Reading returns them as ``bytes`` with no decoding at all; a BSON sub-document would cost a BSON
decode plus an orjson re-encode on every read (and would not give back the same bytes: BSON has no
arbitrary-precision decimals, so ``1.50`` would come back as ``1.5``). The server never queries inside
the body; everything searchable is in ``_s`` and ``_o``.

Errors: :func:`translate` is the one table from driver errors to :mod:`fhir_exchange.errors`:
connection loss and server selection timeouts become TRANSIENT (503 with ``Retry-After``), duplicate
keys and write conflicts on a version become :class:`VersionConflict`, anything else a FAULT.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    CollectionInvalid,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WaitQueueTimeoutError,
)

from fhir_exchange.errors import Category, FhirError, TransactionConflict
from fhir_exchange.store import mongo_search
from fhir_exchange.store.port import ResourceVersion, VersionConflict

# The adapter's one logger, named as when the adapter was one module: operators filter on it.
log = logging.getLogger("fhir_exchange.store.mongo")

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
TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")
CURRENT = {"v": 1, "lu": 1, "del": 1, "body": 1, "m": 1, OWN: 1}  # the projection of a current document
HISTORY_FIELDS = {"t": 1, "i": 1, "v": 1, "lu": 1, "del": 1, "body": 1, "m": 1, OWN: 1}
RETRY_AFTER_UNREACHABLE = 5
RETRY_AFTER_CONFLICT = 1
LOCK_TTL_S = 3600  # lock documents are garbage after this (a conditional create takes milliseconds)
# Changes whenever an index definition changes, so that a start-up after an upgrade re-creates them.
INDEX_VERSION = hashlib.sha256(repr((HISTORY_INDEXES, mongo_search.TYPE_INDEXES, LOCK_TTL_S, GRANT_INDEXES,
                                     (MESSAGES, CHANGES), RECORD_INDEXES)).encode()).hexdigest()[:16]
_WRITE_CONFLICT = 112
_NO_SUCH_TRANSACTION = 251
_NAMESPACE_EXISTS = 48

MONGO_DEFAULT_DB = "fhir_exchange"
MAX_INT = 2**62

_MULTIKEY_PROBE = "~multikey"


# -- documents --------------------------------------------------------------------------------------


def version_of(doc: dict[str, Any], type: str, id: str) -> ResourceVersion:
    """The version a current document (projected with :data:`CURRENT`) holds."""
    return ResourceVersion(type, id, doc["v"], doc["lu"], bool(doc["del"]), bytes(doc["body"]), doc.get("m", "PUT"),
                           doc.get(OWN))


def history_version(doc: dict[str, Any]) -> ResourceVersion:
    return ResourceVersion(doc["t"], doc["i"], doc["v"], doc["lu"], bool(doc["del"]), bytes(doc["body"]),
                           doc.get("m", "PUT"), doc.get(OWN))


def history_doc(version: ResourceVersion, deleted: bool) -> dict[str, Any]:
    return {"_id": history_id(version.type, version.id, version.version_id), "t": version.type, "i": version.id,
            "v": version.version_id, "lu": version.last_updated, "del": deleted,
            "m": "DELETE" if deleted else version.method, "body": b"" if deleted else version.body,
            OWN: version.owner}


def history_id(type: str, id: str, version_id: int) -> str:
    return f"{type}/{id}/_history/{version_id}"


def lock_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# -- indexes ----------------------------------------------------------------------------------------


def _multikey_probe() -> dict[str, Any]:
    """A document with an array under every ``_s`` path a type index names (see create_type_indexes)."""
    fields = {path.split(".")[1] for keys, _name in mongo_search.TYPE_INDEXES for path, _dir in keys
              if path.startswith("_s.")}
    return {"_s": {f: [{"p": "~"}, {"p": "~~"}] for f in sorted(fields)}}


async def create_shared_indexes(db: AsyncDatabase[dict[str, Any]], existing: set[str]) -> None:
    """The indexes (and collections) of every collection that is not a resource type's."""
    for keys, name in HISTORY_INDEXES:
        await db[HISTORY].create_index(keys, name=name)
    await db[LOCKS].create_index("at", name="expire", expireAfterSeconds=LOCK_TTL_S)
    for keys, name in GRANT_INDEXES:
        await db[GRANTS].create_index(keys, name=name)
    for keys, name in RECORD_INDEXES:
        await db[RECORDS].create_index(keys, name=name)
    # Written inside transactions: they must exist before one starts (see MongoStore.set_resource_types).
    for name in (MESSAGES, CHANGES):
        if name not in existing:
            try:
                await db.create_collection(name)
            except CollectionInvalid:
                pass
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_EXISTS:  # another process created it meanwhile
                    raise


async def create_type_indexes(coll: AsyncCollection[dict[str, Any]]) -> None:
    """The indexes of one resource type's collection (mongo_search.TYPE_INDEXES)."""
    await coll.create_indexes([IndexModel(keys, name=name) for keys, name in mongo_search.TYPE_INDEXES])
    # Every ``_s`` index is multikey. The first array document a transaction inserts flips the index's
    # multikey flag in the catalog, and concurrent transactions doing so on a new collection all write
    # that one catalog entry: all but one got a WriteConflict (12% of concurrent create-only
    # transaction Bundles, issue 14). Flipping it here, outside any transaction, with a document no
    # search can see (no ``del``; "~" is no FHIR id character), removes that shared write.
    await coll.replace_one({"_id": _MULTIKEY_PROBE}, _multikey_probe(), upsert=True)
    await coll.delete_one({"_id": _MULTIKEY_PROBE})


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]], types: Iterable[str]) -> set[str]:
    """Every index, for the collections there and the resource ``types``, unless the ``schema`` marker says
    an earlier start created these definitions for them; the resource types whose indexes exist."""
    existing = set(await db.list_collection_names())
    names = {n for n in {*existing, *types} if n not in INTERNAL and TYPE_RE.match(n)}
    marker = await db[SCHEMA].find_one({"_id": "indexes"})
    if (marker is not None and marker.get("version") == INDEX_VERSION and names <= existing
            and names <= set(marker.get("types", ()))):
        return names  # created by an earlier start with the same index definitions
    await create_shared_indexes(db, existing)
    ordered = sorted(names)
    for start in range(0, len(ordered), 16):  # pipelined: start-up costs round trips
        await asyncio.gather(*(create_type_indexes(db[n]) for n in ordered[start:start + 16]))
    await db[SCHEMA].replace_one({"_id": "indexes"}, {"version": INDEX_VERSION, "types": ordered}, upsert=True)
    return names


# -- errors -----------------------------------------------------------------------------------------


def transient(diagnostics: str, retry_after: int = RETRY_AFTER_UNREACHABLE) -> FhirError:
    return FhirError(Category.TRANSIENT, diagnostics, headers={"Retry-After": str(retry_after)})


def is_conflict(exc: BaseException) -> bool:
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
        return transient(f"The database is unreachable: {type(exc).__name__}. Retry later.")
    if isinstance(exc, ExecutionTimeout):
        return transient("The database did not answer in time. Retry later.")
    if isinstance(exc, DuplicateKeyError):
        return VersionConflict(f"A concurrent write created the same key: {exc.details or exc}")
    if isinstance(exc, DocumentTooLarge):
        return FhirError(Category.TOO_LARGE, f"The resource is too large for the database: {exc}", code="too-costly")
    if is_conflict(exc):
        return TransactionConflict("A concurrent transaction wrote the same resources; nothing was written. "
                                   "Retry.", RETRY_AFTER_CONFLICT)
    if isinstance(exc, OperationFailure) and exc.has_error_label("RetryableWriteError"):
        return transient(f"The database is failing over: {exc}")
    return FhirError(Category.FAULT, f"Storage error: {type(exc).__name__}")


@contextmanager
def translated() -> Iterator[None]:
    """Driver errors raised in the block leave it as :func:`translate`'s FhirError."""
    try:
        yield
    except PyMongoError as exc:
        raise translate(exc) from exc
