"""The MongoDB store's records beside the resources: internal records, message records and grants.

- ``records``: internal records (:class:`~fhir_exchange.store.port.Record`: registered clients,
  institutions, the token secret, used assertion ids), ``{_id: "kind|key", k: kind, n: key, v: value
  (binary), x: expires or null}``, each call one single-document operation outside any session (so on a
  standalone server too); :func:`put` with ``if_absent`` is an upsert filtered on ``{_id, x <= now}``:
  an unexpired record does not match, the upsert's insert then hits the ``_id`` and fails with a
  duplicate key, which answers False (of concurrent callers exactly one writes);
- ``messages``: stored answers to FHIR messages (``_id`` = the message key), written in the unit of work;
- ``grants``: one document per grant (``b`` basis, ``g`` grantee, ``t``/``i`` the resource, ``u`` until),
  replaced per basis inside the unit of work; searches stage the ids granted on a type (see
  :mod:`fhir_exchange.store.mongo_search` for the visibility clause).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_exchange.search.query import Visibility
from fhir_exchange.store.mongo_schema import RETRY_AFTER_CONFLICT, transient, translate, translated
from fhir_exchange.store.port import Grant, MessageRecord, Record

Collection = AsyncCollection[dict[str, Any]]

# -- internal records -------------------------------------------------------------------------------


def record_id(kind: str, key: str) -> str:
    return f"{kind}|{key}"


def _unexpired(now: str) -> dict[str, Any]:
    return {"$or": [{"x": None}, {"x": {"$gt": now}}]}


def _record(doc: dict[str, Any]) -> Record:
    return Record(doc["k"], doc["n"], bytes(doc["v"]), doc.get("x"))


async def get(records: Collection, kind: str, key: str, now: str) -> Record | None:
    with translated():
        doc = await records.find_one({"_id": record_id(kind, key), "k": kind, **_unexpired(now)})
    return None if doc is None else _record(doc)


async def put(records: Collection, record: Record, if_absent: bool, now: str) -> bool:
    rid = record_id(record.kind, record.key)
    fields = {"k": record.kind, "n": record.key, "v": record.value, "x": record.expires}
    # An expired record (x <= now; a null x never is) is replaced; an unexpired one does not match, so
    # the upsert inserts and the _id makes that a duplicate key: not written.
    filt: dict[str, Any] = {"_id": rid, "x": {"$lte": now}} if if_absent else {"_id": rid}
    for _attempt in range(3):
        try:
            await records.update_one(filt, {"$set": fields}, upsert=True)
            return True
        except DuplicateKeyError:
            if if_absent:
                return False
            # A plain upsert raced another one's insert: the document exists now, the next one updates it.
        except PyMongoError as exc:
            raise translate(exc) from exc
    raise transient(f"The record {rid} is being written concurrently; it was not written. Retry.",
                    RETRY_AFTER_CONFLICT)


async def delete(records: Collection, kind: str, key: str) -> bool:
    with translated():
        return (await records.delete_one({"_id": record_id(kind, key), "k": kind})).deleted_count > 0


async def of_kind(records: Collection, kind: str, now: str) -> list[Record]:
    with translated():
        docs = await records.find({"k": kind, **_unexpired(now)}).sort("n", ASCENDING).to_list()
    return [_record(d) for d in docs]


async def purge(records: Collection, now: str) -> int:
    with translated():
        return (await records.delete_many({"x": {"$lte": now}})).deleted_count


# -- message records --------------------------------------------------------------------------------


def message_doc(record: MessageRecord) -> dict[str, Any]:
    return {"_id": record.key, "digest": record.digest, "body": record.body, "at": datetime.now(UTC)}


def message_of(doc: dict[str, Any] | None) -> MessageRecord | None:
    return None if doc is None else MessageRecord(doc["_id"], doc["digest"], bytes(doc["body"]))


# -- grants -----------------------------------------------------------------------------------------


def grant_filter(vis: Visibility, type: str | None) -> dict[str, Any]:
    """Grants to one of ``vis.institutions`` valid at ``vis.at`` (on ``type`` when given)."""
    filt: dict[str, Any] = {"g": {"$in": sorted(vis.institutions)}}
    if type is not None:
        filt["t"] = type
    filt["$or"] = [{"u": None}, {"u": {"$gt": vis.at}}]
    return filt


def grant_docs(basis: str, grants: Sequence[Grant]) -> list[dict[str, Any]]:
    return [{"b": basis, "g": g.grantee, "t": g.type, "i": g.id, "u": g.until} for g in grants]


async def granted_one(grants: Collection, vis: Visibility, type: str, id: str,
                      session: AsyncClientSession | None) -> bool:
    """Whether one of the institutions holds a valid grant on ``type/id`` (untranslated driver errors)."""
    if not vis.institutions:
        return False
    return await grants.find_one({**grant_filter(vis, type), "i": id}, {"_id": 1}, session=session) is not None


async def granted_keys(grants: Collection, vis: Visibility, type: str | None,
                       session: AsyncClientSession | None) -> list[tuple[str, str]]:
    """(type, id) of every resource granted to one of the institutions (on ``type`` when given)."""
    if not vis.institutions:
        return []
    with translated():
        return [(d["t"], d["i"]) async for d in
                grants.find(grant_filter(vis, type), {"t": 1, "i": 1, "_id": 0}, session=session)]
