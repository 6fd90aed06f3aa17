"""The MongoDB store's change feed: a ``changes`` document per committed put or delete.

Every committed put/delete gets a ``changes`` document ``{_id: seq, t, i, v, del, lu, at}``.
Concurrent transactions cannot share a counter document inside their transactions without conflicting,
so a unit of work allocates a block of seqs at commit time with one atomic ``$inc`` on
``counters/changes`` *outside* its transaction session (:func:`allocate`), just before
``commitTransaction``, and inserts its change documents with those seqs inside the transaction: they
become visible with its writes, or never. If the commit fails, ``void`` documents are inserted for the
allocated seqs outside the transaction (:func:`void`; best effort, a duplicate key there means the commit
did happen). A standalone unit of work allocates at its end, before applying its write, and writes the
change document after it.

Seqs are allocated in one order and committed in another, so a reader may see seq n+1 before n. So
:func:`after` returns only the contiguous prefix after the cursor: void documents are skipped but close
the gap; a gap is skipped once the first document after it was allocated more than ``gap_s`` (default
:data:`CHANGE_GAP_S`, MongoDB's transaction lifetime) ago, because the gap was allocated earlier still and
its transaction has ended by then (committed, so present, or never). A reader therefore never moves its
cursor past a seq that can still appear, and sees every commit once, at the price of waiting up to the
bound behind a unit of work that died between allocation and commit. ``at`` is the allocating server's
clock; clocks of the application servers must agree to well within the bound. :func:`last` is the end
of that prefix (not the highest seq allocated).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from fhir_exchange.errors import TransactionConflict
from fhir_exchange.store.mongo_schema import CHANGES, RETRY_AFTER_CONFLICT, translated
from fhir_exchange.store.port import ChangeRecord, ResourceVersion

CHANGE_GAP_S = 60.0  # how long a gap in the change feed may still be filled by a commit (transaction lifetime)

Collection = AsyncCollection[dict[str, Any]]


def change_doc(seq: int, at: datetime, version: ResourceVersion, deleted: bool) -> dict[str, Any]:
    return {"_id": seq, "t": version.type, "i": version.id, "v": version.version_id, "del": deleted,
            "lu": version.last_updated, "at": at}


def duplicate_seq(exc: PyMongoError) -> bool:
    """Whether inserting change documents failed on a seq already stored (the counter was behind)."""
    if isinstance(exc, DuplicateKeyError):
        return True
    return isinstance(exc, BulkWriteError) and any(e.get("code") == 11000
                                                   for e in exc.details.get("writeErrors", ()))


def now() -> datetime:
    """UTC now as the driver returns BSON dates (``tz_aware=False``: naive UTC, milliseconds)."""
    at = datetime.now(UTC).replace(tzinfo=None)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


async def allocate(counters: Collection, n: int) -> tuple[list[int], datetime]:
    """A block of ``n`` change seqs (one atomic $inc, outside any transaction) and its allocation time."""
    doc: dict[str, Any] | None = None
    with translated():
        for attempt in range(3):
            try:
                doc = await counters.find_one_and_update(
                    {"_id": CHANGES}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:  # two first allocations raced on the upsert: the document exists now
                if attempt == 2:
                    raise
                continue
            if doc is not None:  # SecantusDB may answer None to concurrent first upserts: ask again
                break
    if doc is None:
        raise TransactionConflict("The change feed's counter could not be allocated; nothing was written. "
                                  "Retry.", RETRY_AFTER_CONFLICT)
    top = int(doc["n"])
    return list(range(top - n + 1, top + 1)), now()


async def repair_counter(changes: Collection, counters: Collection) -> None:
    """Move the counter past every stored seq (it lost increments: a crash took an acknowledged $inc but
    kept committed records)."""
    with suppress(PyMongoError):
        top = await changes.find_one({}, {"_id": 1}, sort=[("_id", -1)])
        if top is not None:
            await counters.update_one({"_id": CHANGES}, {"$max": {"n": int(top["_id"])}}, upsert=True)


async def void(changes: Collection, seqs: Sequence[int]) -> None:
    """Close the gap of seqs whose writes were not committed (best effort; a duplicate key means the
    real record is there after all)."""
    if not seqs:
        return
    at = now()
    with suppress(PyMongoError):
        await changes.insert_many([{"_id": n, "void": True, "at": at} for n in seqs], ordered=False)


async def after(changes: Collection, cursor: int, limit: int, gap_s: float) -> list[ChangeRecord]:
    """Committed writes with ``seq > cursor``: the contiguous prefix only (see the module docstring)."""
    out: list[ChangeRecord] = []
    if limit <= 0:
        return out
    expected = cursor + 1
    cutoff = now() - timedelta(seconds=gap_s)
    with translated():
        while True:
            docs = await changes.find({"_id": {"$gt": cursor}}).sort("_id", 1).limit(
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


async def last(changes: Collection, gap_s: float) -> int:
    """The end of the contiguous prefix of the feed: a reader starting here misses no later commit."""
    cutoff = now() - timedelta(seconds=gap_s)
    young: list[int] = []
    base = 0
    with translated():
        # Newest first, down to the first record older than the bound: every gap below it is closed.
        async for d in changes.find({}, {"at": 1}).sort("_id", -1):
            if d["at"] < cutoff:
                base = d["_id"]
                break
            young.append(d["_id"])
    for n in reversed(young):
        if n != base + 1:
            break
        base = n
    return base
