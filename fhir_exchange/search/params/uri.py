"""uri parameters (https://hl7.org/fhir/R4/search.html#uri): exact match (case-sensitive), ``:below``
(the indexed uri starts with the value) and ``:above`` (the value starts with the indexed uri).
A ``url|version`` value on a canonical matches the url (versions are not indexed for uri params).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params._keys import mkey, prefix_range
from fhir_exchange.search.query import UriValue

TABLE = "search_uri"
COLUMNS = ("uri",)
SORT_COLUMN = "uri"
MODIFIERS = frozenset({"missing", "above", "below"})


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, _typ = item
    if isinstance(node, str) and node:
        return [IndexEntry(code, "uri", uri=node.partition("|")[0])]
    if isinstance(node, dict) and isinstance(node.get("reference"), str):
        return [IndexEntry(code, "uri", uri=node["reference"])]
    return []


def parse_value(raw: str, modifier: str | None, name: str) -> UriValue:
    if not raw:
        raise invalid(f"Empty value for search parameter '{name}'", name)
    return UriValue(raw.partition("|")[0] if modifier is None else raw)


def sql(v: UriValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    if modifier == "below":
        return f"{alias}.uri >= ? AND {alias}.uri < ?", [v.uri, v.uri + "\U0010ffff"]
    if modifier == "above":
        return f"? >= {alias}.uri AND substr(?, 1, length({alias}.uri)) = {alias}.uri", [v.uri, v.uri]
    return f"{alias}.uri = ?", [v.uri]


def match(e: IndexEntry, v: UriValue, modifier: str | None) -> bool:
    u = e.uri or ""
    if modifier == "below":
        return u.startswith(v.uri)
    if modifier == "above":
        return v.uri.startswith(u)
    return u == v.uri


# -- MongoDB: ``_s.uri`` p|uri. :below is a prefix range; :above an ``$in`` over the value's prefixes
# (the indexed uri is one of them), so both stay on the index.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [] if e.uri is None else [("uri", mkey(e.param, e.uri))]


def mongo(v: UriValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    if modifier == "below":
        return {f"{at}uri": prefix_range(mkey(code, v.uri))}
    if modifier == "above":
        return {f"{at}uri": {"$in": [mkey(code, v.uri[:n]) for n in range(len(v.uri) + 1)]}}
    return {f"{at}uri": mkey(code, v.uri)}
