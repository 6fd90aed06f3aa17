"""Search parameter types (https://hl7.org/fhir/R4/search.html#ptypes), one module each, Blaze style:
index extraction, value parsing, SQL compilation and in-memory matching side by side, so that the
stores and the matcher cannot drift apart.

Every module provides ``TABLE``, ``COLUMNS`` (IndexEntry fields stored, in column order),
``SORT_COLUMN``, ``MODIFIERS``, ``extract(code, item) -> list[IndexEntry]``,
``parse_value(raw, modifier) -> Value``, ``sql(value, modifier, alias) -> (condition, args)`` and
``match(entry, value, modifier) -> bool``; for MongoDB (:mod:`fhir_exchange.store.mongo_search`)
``mongo_index(entry) -> [(field, value)]`` (the values stored beside the resource under ``_s``) and
``mongo(value, modifier, code, at) -> filter`` (a plain dict over those fields; no driver import).
"""

from __future__ import annotations

from types import ModuleType

from fhir_exchange.search.params import date, near, number, quantity, reference, string, token, uri
from fhir_exchange.search.params._keys import HIGH, mkey, prefix_range

__all__ = ["HIGH", "KINDS", "mkey", "prefix_range", "split_escaped", "unescape"]

KINDS: dict[str, ModuleType] = {
    "token": token,
    "string": string,
    "date": date,
    "number": number,
    "quantity": quantity,
    "reference": reference,
    "uri": uri,
    "special": near,  # near is the only special parameter indexed (registry.SPECIAL)
}


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` unless escaped with a backslash (search.html#escaping); unescape ``\\,``
    ``\\|`` ``\\$`` ``\\\\`` in the parts."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in ",|$\\":
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
