"""Index keys of the MongoDB layout, shared by the parameter-type modules (plain strings and dicts:
no driver import)."""

from __future__ import annotations

from typing import Any

from fhir_exchange.search.prefix import conjunction

HIGH = "\U0010ffff"  # above every other code point: ``[k, k + HIGH)`` is "starts with k"


def mkey(*parts: str) -> str:
    """An index key for MongoDB: ``parts`` joined with ``|``. Every part but the last has ``\\`` and ``|``
    escaped, so keys of one arity are unambiguous (``identifier|urn:mrn|123``) while the last part
    stays as written (prefix and substring searches run on it directly)."""
    head = [x.replace("\\", "\\\\").replace("|", "\\|") for x in parts[:-1]]
    return "|".join([*head, parts[-1]])


def prefix_range(key: str) -> dict[str, Any]:
    """The condition "some key of the array starts with ``key``": a range inside ``$elemMatch``, since
    a bare range on an array may be met by two different keys (one >= the start, another < the end).
    MongoDB serves it with tight bounds on the field's multikey index."""
    return {"$elemMatch": {"$gte": key, "$lt": key + HIGH}}


def all_of(*conds: dict[str, Any]) -> dict[str, Any]:
    """The conjunction of filter clauses: merged into one dict when their keys differ, else ``$and``."""
    return conjunction(list(conds))
