"""reference parameters (https://hl7.org/fhir/R4/search.html#reference): ``[type]/[id]``, ``[id]``,
``[type]/[id]/_history/[version]``, an absolute URL, a canonical ``url|version``; ``:[type]`` restricts
the target type; ``:identifier`` matches Reference.identifier as a token.

Index rows: a relative reference gives (ref_type, ref_id[, ref_version]); an absolute URL or
urn:uuid, and a canonical, give ``uri`` (with ``ref_version`` for ``|version``); Reference.identifier
gives (system, code). A plain id with no type matches references to any type with that id
(search.html#reference).

Absolute URLs on this server's own base (search.html#reference: "[url]" where the URL is the server's
base plus ``Type/id``) are local references: :func:`local_reference` is the one place that decides it,
from the bases of ``Settings.local_base_urls`` (``public_base_url``, else the listening address). The
indexer stores them as ``Type/id`` (:func:`localise_entries`, so ``subject=Patient/1`` finds a
``http://our-base/Patient/1``), and a search value on our base, or on the request's base, also matches
``Type/id`` (:func:`localise_query`, which keeps the literal URL as an OR'd value: a reference stored
under a base not known at index time still matches as written). A URL on another server matches only
that literal URL. Resources indexed before their base was configured need ``$reindex``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params._keys import mkey
from fhir_exchange.search.query import Criterion, Param, ReferenceValue, SearchQuery, TokenValue

TABLE = "search_reference"
COLUMNS = ("ref_type", "ref_id", "ref_version", "uri", "system", "code")
SORT_COLUMN = "ref_id"
MODIFIERS = frozenset({"missing", "identifier"})  # plus :[type]

_REL = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<v>[A-Za-z0-9\-.]+))?$")


def split_reference(ref: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, id, version, uri) of a reference string."""
    m = _REL.match(ref)
    if m:
        return m["type"], m["id"], m["v"], None
    if ref.startswith("#"):
        return None, None, None, None
    url, bar, version = ref.partition("|")
    return None, None, (version if bar else None), url


def local_reference(url: str, bases: Iterable[str]) -> tuple[str, str, str | None] | None:
    """(type, id, version) of an absolute ``url`` on one of ``bases`` (this server's), else None."""
    for base in bases:
        base = base.rstrip("/")
        if base and url.startswith(base + "/"):
            m = _REL.match(url[len(base) + 1:])
            if m:
                return m["type"], m["id"], m["v"]
    return None


def localise_entries(entries: Sequence[IndexEntry], bases: Sequence[str]) -> list[IndexEntry]:
    """Index entries with references written as absolute URLs on ``bases`` turned into ``Type/id``."""
    out = list(entries)
    for n, e in enumerate(out):
        if e.kind == "reference" and e.uri is not None and "://" in e.uri:
            local = local_reference(e.uri, bases)
            if local is not None:
                out[n] = dataclasses.replace(e, ref_type=local[0], ref_id=local[1],
                                             ref_version=local[2] or e.ref_version, uri=None)
    return out


def localise_query(query: SearchQuery, bases: Sequence[str]) -> SearchQuery:
    """``query`` with reference values on ``bases`` also matching the ``Type/id`` they name."""
    if not bases:
        return query
    params = tuple(_localise(c, bases) for c in query.params)
    return query if params == query.params else dataclasses.replace(query, params=params)


def _localise(c: Criterion, bases: Sequence[str]) -> Criterion:
    if isinstance(c, Param):
        if c.type != "reference" or c.modifier is not None:
            return c
        values = list(c.values)
        for v in c.values:
            if isinstance(v, ReferenceValue) and v.url is not None and v.version is None:
                local = local_reference(v.url, bases)
                if local is not None and (v.type is None or v.type == local[0]):
                    rv = ReferenceValue(local[0], local[1], local[2])
                    if rv not in values:
                        values.append(rv)
        return c if len(values) == len(c.values) else dataclasses.replace(c, values=tuple(values))
    # Chains, _has, and the boolean combinations (whatever they are): the same inside.
    node: Any = c
    if hasattr(node, "criterion"):
        return dataclasses.replace(node, criterion=_localise(node.criterion, bases))
    if hasattr(node, "criteria"):
        return dataclasses.replace(node, criteria=tuple(_localise(x, bases) for x in node.criteria))
    return c


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, _typ = item
    out: list[IndexEntry] = []
    if isinstance(node, str):  # canonical or uri
        t, i, v, u = split_reference(node)
        if t or u:
            out.append(IndexEntry(code, "reference", ref_type=t, ref_id=i, ref_version=v, uri=u))
    elif isinstance(node, dict):
        ref = node.get("reference")
        ident = node.get("identifier") if isinstance(node.get("identifier"), dict) else None
        t = i = v = u = None
        if isinstance(ref, str):
            t, i, v, u = split_reference(ref)
        if t or u or ident:
            out.append(IndexEntry(code, "reference", ref_type=t, ref_id=i, ref_version=v, uri=u,
                                  system=ident.get("system") if ident else None,
                                  code=str(ident["value"]) if ident and ident.get("value") is not None else None))
    return out


def parse_value(raw: str, modifier: str | None, name: str, target_type: str | None = None,
                ) -> ReferenceValue | TokenValue:
    if modifier == "identifier":
        from fhir_exchange.search.params import token

        return token.parse_value(raw, None, name)
    if not raw:
        raise invalid(f"Empty value for search parameter '{name}'", name)
    m = _REL.match(raw)
    if m:
        if target_type and m["type"] != target_type:
            raise invalid(f"Reference '{raw}' contradicts the modifier :{target_type} of '{name}'", name)
        return ReferenceValue(m["type"], m["id"], m["v"])
    if re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", raw):
        return ReferenceValue(target_type, raw)
    if ":" in raw:
        url, bar, version = raw.partition("|")
        return ReferenceValue(url=url, version=version if bar else None)
    raise invalid(f"Invalid reference '{raw}' for search parameter '{name}'", name)


def sql(v: ReferenceValue | TokenValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    if isinstance(v, TokenValue):
        from fhir_exchange.search.params import token

        return token.sql(v, None, alias)
    conds: list[str] = []
    args: list[Any] = []
    if v.url is not None:
        conds.append(f"{alias}.uri = ?")
        args.append(v.url)
    if v.id is not None:
        conds.append(f"{alias}.ref_id = ?")
        args.append(v.id)
    if v.type is not None:
        conds.append(f"{alias}.ref_type = ?")
        args.append(v.type)
    if v.version is not None:
        conds.append(f"{alias}.ref_version = ?")
        args.append(v.version)
    return " AND ".join(conds), args


def match(e: IndexEntry, v: ReferenceValue | TokenValue, modifier: str | None) -> bool:
    if isinstance(v, TokenValue):
        from fhir_exchange.search.params import token

        return token.match(e, v, None)
    return ((v.url is None or e.uri == v.url) and (v.id is None or e.ref_id == v.id)
            and (v.type is None or e.ref_type == v.type) and (v.version is None or e.ref_version == v.version))


# -- MongoDB: ``_s.ref`` p|Type|id, ``_s.refi`` p|id (any type), ``_s.refv`` p|Type|id|version,
# ``_s.refu`` p|url, ``_s.refuv`` p|url|version; Reference.identifier in the token fields. Every
# query value is one equality on one indexed array; chains and _has compare ``_s.ref`` keys.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    from fhir_exchange.search.params import token

    p = e.param
    out: list[tuple[str, Any]] = []
    if e.ref_id is not None:
        out.append(("refi", mkey(p, e.ref_id)))
        if e.ref_type is not None:
            out.append(("ref", mkey(p, e.ref_type, e.ref_id)))
            if e.ref_version is not None:
                out.append(("refv", mkey(p, e.ref_type, e.ref_id, e.ref_version)))
    if e.uri is not None:
        out.append(("refu", mkey(p, e.uri)))
        if e.ref_version is not None:
            out.append(("refuv", mkey(p, e.uri, e.ref_version)))
    if e.system is not None or e.code is not None:
        out.extend(token.mongo_index(IndexEntry(p, "token", system=e.system, code=e.code)))
    return out


def mongo(v: ReferenceValue | TokenValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    if isinstance(v, TokenValue):
        from fhir_exchange.search.params import token

        return token.mongo(v, None, code, at)
    if v.url is not None:
        if v.id is not None or v.type is not None:
            return {"_id": {"$in": []}}  # a reference is either a URL or a local one
        return ({f"{at}refuv": mkey(code, v.url, v.version)} if v.version is not None
                else {f"{at}refu": mkey(code, v.url)})
    if v.id is not None:
        if v.type is None:
            if v.version is not None:
                raise invalid(f"A versioned reference needs its type ('{code}')", code)
            return {f"{at}refi": mkey(code, v.id)}
        if v.version is not None:
            return {f"{at}refv": mkey(code, v.type, v.id, v.version)}
        return {f"{at}ref": mkey(code, v.type, v.id)}
    if v.type is not None or v.version is not None:
        raise invalid(f"A reference search value needs an id or a URL ('{code}')", code)
    return {f"{at}has": code}
