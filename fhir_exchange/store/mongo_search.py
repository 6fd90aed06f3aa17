"""MongoDB compilation of search queries, and the indexed fields they run against.

Why this shape: MongoDB serves a query well when each predicate is an equality on one indexed field.
So the extracted search values of a resource are stored *beside* it, in its own document, under
``_s``, as flat arrays of strings that carry the parameter code as a prefix (``"identifier|sys|123"``).
One multikey index per field family (not per parameter) then serves every parameter of that family
(a collection may have at most 64 indexes; Patient alone has ~30 search parameters), and a FHIR token
search is an ``$in`` on one indexed array, never an ``$elemMatch`` over sub-documents. Only range
kinds (date, number, quantity) need sub-documents and ``$elemMatch``: a range is two values that must
come from the same entry.

Field families (``p`` is the search parameter code, which never contains ``|``):

=============  =====================================  ============================================
field          entries                                serves
=============  =====================================  ============================================
``_s.tok``     ``p|system|code`` (system "" if none)  ``p=system|code`` and ``p=|code``
``_s.tokc``    ``p|code``                             ``p=code`` (any system); also ``_id|<id>``
``_s.toks``    ``p|system``                           ``p=system|`` (any code)
``_s.str``     ``p|normalised text``                  string prefix (anchored regex on the index)
``_s.strx``    ``p|text as written``                  string ``:exact``
``_s.ref``     ``p|Type/id``, ``p|id``, ``p|url``     reference by type and id, by id, by URL
``_s.uri``     ``p|uri``                              uri equality
``_s.date``    ``{p, lo, hi}``                        date ranges (``$elemMatch``)
``_s.num``     ``{p, lo, hi}``                        number ranges
``_s.qty``     ``{p, lo, hi, s, c}``                  quantity ranges with system and code
=============  =====================================  ============================================

Deleted versions carry no ``_s`` at all, so a match on any ``_s`` field is a live resource without a
``del`` predicate: one predicate, one index (some planners, SecantusDB's among them, use an index only
when it covers the whole filter).

The compiler covers what the SQLite compiler covers (``_id`` and token parameters, newest first) and
accepts both the plain ``"system|code"`` strings and typed token values of the search model; anything
else is refused with 501 rather than silently widened. This module has no driver import: it builds
plain dicts that :mod:`fhir_exchange.store.mongo` executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_exchange.errors import Category, FhirError
from fhir_exchange.store.port import IndexEntry

# (keys, name) of the indexes every resource-type collection has. The listing index serves "all live
# resources of a type, newest first"; ``_c`` (creation sequence) breaks ties like SQLite's rowid.
TYPE_INDEXES: list[tuple[list[tuple[str, int]], str]] = [
    ([("del", 1), ("lu", -1), ("_c", 1)], "live_by_lastUpdated"),
    ([("_s.tok", 1)], "s_tok"),
    ([("_s.tokc", 1)], "s_tokc"),
    ([("_s.toks", 1)], "s_toks"),
    ([("_s.str", 1)], "s_str"),
    ([("_s.strx", 1)], "s_strx"),
    ([("_s.ref", 1)], "s_ref"),
    ([("_s.uri", 1)], "s_uri"),
    ([("_s.date.p", 1), ("_s.date.lo", 1), ("_s.date.hi", 1)], "s_date"),
    ([("_s.num.p", 1), ("_s.num.lo", 1), ("_s.num.hi", 1)], "s_num"),
    ([("_s.qty.p", 1), ("_s.qty.lo", 1), ("_s.qty.hi", 1)], "s_qty"),
]

SORT: list[tuple[str, int]] = [("lu", -1), ("_c", 1)]


def index_fields(id: str, entries: Sequence[IndexEntry]) -> dict[str, list[Any]]:
    """The ``_s`` sub-document of a live resource from its extracted index entries."""
    s: dict[str, list[Any]] = {"tokc": [f"_id|{id}"]}

    def add(field: str, value: Any) -> None:
        bucket = s.setdefault(field, [])
        if value not in bucket:
            bucket.append(value)

    for e in entries:
        p = e.param
        if e.kind == "token":
            if e.code is not None:
                add("tok", f"{p}|{e.system or ''}|{e.code}")
                add("tokc", f"{p}|{e.code}")
            if e.system:
                add("toks", f"{p}|{e.system}")
        elif e.kind == "string":
            if e.text is not None:
                add("str", f"{p}|{e.text}")
            if e.code is not None:  # the value as written, when the extractor gives it
                add("strx", f"{p}|{e.code}")
        elif e.kind == "reference":
            if e.ref_id:
                if e.ref_type:
                    add("ref", f"{p}|{e.ref_type}/{e.ref_id}")
                add("ref", f"{p}|{e.ref_id}")
            if e.uri:
                add("ref", f"{p}|{e.uri}")
        elif e.kind == "uri":
            if e.uri is not None:
                add("uri", f"{p}|{e.uri}")
        elif e.kind == "date":
            add("date", {"p": p, "lo": e.low, "hi": e.high})
        elif e.kind == "number":
            add("num", {"p": p, "lo": e.low, "hi": e.high})
        elif e.kind == "quantity":
            add("qty", {"p": p, "lo": e.low, "hi": e.high, "s": e.system, "c": e.code})
    return s


def _unsupported(what: str) -> FhirError:
    return FhirError(Category.NOT_IMPLEMENTED, f"Search on MongoDB does not support {what} yet",
                     code="not-supported")


def _token_predicate(code: str, value: Any) -> tuple[str, str]:
    """(field, key) of one token value: a ``"system|code"`` string or a typed token value."""
    if isinstance(value, str):
        system, bar, tcode = value.rpartition("|")
        if not bar:
            return "tokc", f"{code}|{value}"
        if system:
            return ("tok", f"{code}|{system}|{tcode}") if tcode else ("toks", f"{code}|{system}")
        return "tok", f"{code}||{tcode}"
    if getattr(value, "text", None) is not None:
        raise _unsupported("token :text")
    vsys, vcode = getattr(value, "system", None), getattr(value, "code", None)
    if vcode is None:
        if vsys is None:
            raise _unsupported("an empty token value")
        return "toks", f"{code}|{vsys}"
    if vsys is None:
        return "tokc", f"{code}|{vcode}"
    return "tok", f"{code}|{vsys}|{vcode}"


def _criterion(c: Any) -> dict[str, Any]:
    """One ANDed criterion as a filter clause whose values are ORed."""
    ids = getattr(c, "ids", None)
    if ids is not None:  # IdIn
        if getattr(c, "negate", False):
            raise _unsupported("_id:not")
        return {"_s.tokc": {"$in": [f"_id|{i}" for i in ids]}}
    code = getattr(c, "code", None)
    values = getattr(c, "values", None)
    if code is None or values is None:
        raise _unsupported(f"the criterion {type(c).__name__}")
    if code == "_id":
        return {"_s.tokc": {"$in": [f"_id|{v if isinstance(v, str) else getattr(v, 'code', v)}" for v in values]}}
    if getattr(c, "type", "token") not in ("token", "special") or getattr(c, "modifier", None) not in (None, ""):
        # Parity with the SQLite compiler: every non-_id parameter is a token parameter; other kinds
        # and modifiers arrive with the search redesign.
        kind = getattr(c, "type", "?")
        modifier = getattr(c, "modifier", None)
        if kind != "token" or modifier not in (None, "", "exact"):
            raise _unsupported(f"{kind} parameters{f' with :{modifier}' if modifier else ''} ('{code}')")
    by_field: dict[str, list[str]] = {}
    for v in values:
        field, key = _token_predicate(code, v)
        by_field.setdefault(field, []).append(key)
    ors = [{f"_s.{f}": {"$in": keys}} for f, keys in by_field.items()]
    return ors[0] if len(ors) == 1 else {"$or": ors}


def compile_filter(params: Sequence[Any]) -> dict[str, Any]:
    """The filter of a search on one resource-type collection (criteria ANDed)."""
    clauses = [_criterion(c) for c in params]
    if not clauses:
        return {"del": False}
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses}
