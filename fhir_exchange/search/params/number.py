"""number parameters (https://hl7.org/fhir/R4/search.html#number): a search value carries an implicit
precision range (``100`` is [99.5, 100.5), ``1e2`` also, ``100.0`` is [99.95, 100.05)). Resource values
are kept as a closed range [low, high] (a decimal is a point; a Range is its bounds, an absent bound
unbounded).

Prefixes, with [lo, hi] the resource's range, v the search value and [slo, shi) its precision range:
``eq`` slo <= lo and hi < shi; ``ne`` not eq; ``gt`` hi > v; ``lt`` lo < v; ``ge`` hi >= v;
``le`` lo <= v; ``sa`` lo > v; ``eb`` hi < v; ``ap`` overlaps v +/- 10% of |v| (and at least the
precision range).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params.date import split_prefix
from fhir_exchange.search.query import NUM_MAX, NUM_MIN, NumberValue

TABLE = "search_number"
COLUMNS = ("low", "high")
SORT_COLUMN = "low"
MODIFIERS = frozenset({"missing"})


def value_range(node: Any) -> tuple[float, float] | None:
    """A decimal, or a Quantity/Range (their value/low/high), as a closed range."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int | float):
        return float(node), float(node)
    if isinstance(node, dict):
        if isinstance(node.get("value"), int | float) and not isinstance(node.get("value"), bool):
            v = float(node["value"])
            return v, v
        if "low" in node or "high" in node:
            low = (node.get("low") or {}).get("value")
            high = (node.get("high") or {}).get("value")
            if not isinstance(low, int | float) and not isinstance(high, int | float):
                return None
            return (float(low) if isinstance(low, int | float) else NUM_MIN,
                    float(high) if isinstance(high, int | float) else NUM_MAX)
    return None


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    r = value_range(item[0])
    return [] if r is None else [IndexEntry(code, "number", low=r[0], high=r[1])]


def parse_number(raw: str, name: str) -> NumberValue:
    prefix, rest = split_prefix(raw)
    try:
        d = Decimal(rest)
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or rest.strip() != rest or not rest:
        raise invalid(f"Invalid number '{raw}' for search parameter '{name}'", name)
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)  # half a unit of the last given digit
    return NumberValue(prefix, float(d), float(d - half), float(d + half))


def parse_value(raw: str, modifier: str | None, name: str) -> NumberValue:
    return parse_number(raw, name)


def _ap(v: NumberValue) -> tuple[float, float]:
    gap = abs(v.value) * 0.1
    return min(v.low, v.value - gap), max(v.high, v.value + gap)


def sql(v: NumberValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    lo, hi = f"{alias}.low", f"{alias}.high"
    p = v.prefix
    if p == "eq":
        return f"{lo} >= ? AND {hi} < ?", [v.low, v.high]
    if p == "ne":
        return f"NOT ({lo} >= ? AND {hi} < ?)", [v.low, v.high]
    if p == "gt":
        return f"{hi} > ?", [v.value]
    if p == "lt":
        return f"{lo} < ?", [v.value]
    if p == "ge":
        return f"{hi} >= ?", [v.value]
    if p == "le":
        return f"{lo} <= ?", [v.value]
    if p == "sa":
        return f"{lo} > ?", [v.value]
    if p == "eb":
        return f"{hi} < ?", [v.value]
    a, b = _ap(v)
    return f"{lo} <= ? AND {hi} >= ?", [b, a]


def match(e: IndexEntry, v: NumberValue, modifier: str | None) -> bool:
    lo, hi = e.low, e.high
    assert isinstance(lo, float) and isinstance(hi, float)
    p = v.prefix
    if p == "eq":
        return lo >= v.low and hi < v.high
    if p == "ne":
        return not (lo >= v.low and hi < v.high)
    if p == "gt":
        return hi > v.value
    if p == "lt":
        return lo < v.value
    if p == "ge":
        return hi >= v.value
    if p == "le":
        return lo <= v.value
    if p == "sa":
        return lo > v.value
    if p == "eb":
        return hi < v.value
    a, b = _ap(v)
    return lo <= b and hi >= a


# -- MongoDB: ``_s.num`` holds ``{p, lo, hi}`` per value; a prefix is one ``$elemMatch``.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [("num", {"p": e.param, "lo": e.low, "hi": e.high})]


def mongo_range(v: NumberValue) -> dict[str, Any]:
    """The condition on one ``{lo, hi}`` value (the same algebra as :func:`sql`)."""
    p = v.prefix
    if p == "eq":
        return {"lo": {"$gte": v.low}, "hi": {"$lt": v.high}}
    if p == "ne":
        return {"$or": [{"lo": {"$lt": v.low}}, {"hi": {"$gte": v.high}}]}
    if p == "gt":
        return {"hi": {"$gt": v.value}}
    if p == "lt":
        return {"lo": {"$lt": v.value}}
    if p == "ge":
        return {"hi": {"$gte": v.value}}
    if p == "le":
        return {"lo": {"$lte": v.value}}
    if p == "sa":
        return {"lo": {"$gt": v.value}}
    if p == "eb":
        return {"hi": {"$lt": v.value}}
    a, b = _ap(v)
    return {"lo": {"$lte": b}, "hi": {"$gte": a}}


def mongo(v: NumberValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    return {f"{at}num": {"$elemMatch": {"p": code, **mongo_range(v)}}}
