"""The MongoDB store's history: reading past versions from the insert-only ``history`` collection.

Every put and delete of a unit of work (:mod:`fhir_exchange.store.mongo_units`) inserts its version,
delete markers included, as ``{_id: "Type/id/_history/n", t, i, v, lu, del, m, body, own}``; nothing
updates or removes one. A history page is ordered newest first and pinned with an upper bound on ``lu``
(``_till``, carried in the paging links) so that pages do not shift under writers; ``_at`` picks, per
resource, the newest version not after the instant (an aggregation). Visibility is a filter on each
version as stored (its own owner), grants and shared types by (type, id), that the caller compiles
(:func:`fhir_exchange.store.mongo_search.history_clause`).

:func:`load` writes history as it is (``fhir-exchange migrate`` copying another store's versions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

from fhir_exchange.store import mongo_search
from fhir_exchange.store.mongo_schema import (
    HISTORY_FIELDS,
    OWN,
    history_doc,
    history_id,
    history_version,
    translate,
    translated,
)
from fhir_exchange.store.port import HistoryPage, HistoryQuery, ResourceVersion

if TYPE_CHECKING:
    from fhir_exchange.store.mongo import MongoStore

Collection = AsyncCollection[dict[str, Any]]


async def version(history: Collection, type: str, id: str, version_id: int) -> ResourceVersion | None:
    """One version of a resource (vread), as it was written."""
    doc = await history.find_one({"_id": history_id(type, id, version_id)}, HISTORY_FIELDS)
    return None if doc is None else history_version(doc)


def _match(query: HistoryQuery) -> dict[str, Any]:
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
    return match


async def page(history: Collection, query: HistoryQuery, vis: dict[str, Any] | None) -> HistoryPage:
    """One page of ``query`` and the total; ``vis`` is the visibility filter (None: everything)."""
    match = _match(query)
    sort = {"lu": -1, "t": 1, "i": 1, "v": -1}
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
        counted = await (await history.aggregate([*head, {"$count": "n"}])).to_list()
        total = counted[0]["n"] if counted else 0
        docs = [] if query.count <= 0 else await (await history.aggregate(
            [*head, {"$sort": sort}, {"$skip": query.offset}, {"$limit": query.count}])).to_list()
    else:
        if vis is not None:
            match = mongo_search.all_of(match, vis)
        total = await history.count_documents(match)
        docs = [] if query.count <= 0 else await history.find(match, HISTORY_FIELDS).sort(
            list(sort.items())).skip(query.offset).limit(query.count).to_list()
    return HistoryPage([history_version(d) for d in docs], total)


async def every(history: Collection) -> AsyncIterator[ResourceVersion]:
    """Every stored version of every resource, oldest first per resource (for migration checks)."""
    async for d in history.find({}, HISTORY_FIELDS).sort([("t", 1), ("i", 1), ("v", 1)]):
        yield history_version(d)


async def load(store: MongoStore, versions: Sequence[ResourceVersion]) -> int:
    """Bulk-load versions exactly as they are (``fhir-exchange migrate``, ``MongoStore.import_versions``);
    returns how many were new.

    History documents already present are skipped and a current document only ever moves forward to
    a newer version, so an interrupted migration can simply be run again. Meant for an offline
    copy: it does not take the per-resource locks that units of work take.
    """
    newest: dict[tuple[str, str], ResourceVersion] = {}
    for v in versions:
        key = (v.type, v.id)
        if key not in newest or v.version_id > newest[key].version_id:
            newest[key] = v
    docs = [history_doc(v, v.deleted) for v in versions]
    inserted = len(docs)
    try:
        await store._history.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise translate(exc) from exc
        inserted -= len(errors)
    except PyMongoError as exc:
        raise translate(exc) from exc
    for (type, id), v in newest.items():
        coll = await store._type_coll(type)
        fields: dict[str, Any] = {"v": v.version_id, "lu": v.last_updated, "del": v.deleted,
                                  "m": "DELETE" if v.deleted else v.method, "body": b"" if v.deleted else v.body,
                                  OWN: v.owner}
        update: dict[str, Any] = {"$set": fields}
        if v.deleted:
            update["$unset"] = mongo_search.UNSET
        else:
            entries = store._indexer(type, orjson.loads(v.body)) if store._indexer else ()
            fields.update(mongo_search.stored_fields(id, entries))
        with translated():
            cur = await coll.find_one({"_id": id}, {"v": 1})
            if cur is None:
                await coll.insert_one({"_id": id, **fields, "_c": store._seq.next()})
            elif cur["v"] < v.version_id:
                await coll.update_one({"_id": id, "v": cur["v"]}, update)
    return inserted
