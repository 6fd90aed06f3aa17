"""number parameters (https://hl7.org/fhir/R4/search.html#number): a search value carries an implicit
precision range (``100`` is [99.5, 100.5), ``1e2`` also, ``100.0`` is [99.95, 100.05)). Resource values
are kept as a closed range [low, high] (a decimal is a point; a Range is its bounds, an absent bound
unbounded).

Prefixes (``eq``/``ne``/``ap`` on the precision range, the others on the value itself) are
:func:`fhir_exchange.search.prefix.for_number`, the one definition SQLite, MongoDB and the matcher
evaluate.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search import prefix as algebra
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


def parse_decimal(raw: str, name: str) -> tuple[str, Decimal]:
    """The prefix and the decimal of ``[prefix]number``; 400 when it is not one."""
    prefix, rest = split_prefix(raw)
    try:
        d = Decimal(rest)
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or rest.strip() != rest or not rest:
        raise invalid(f"Invalid number '{raw}' for search parameter '{name}'", name)
    return prefix, d


def value_of(prefix: str, d: Decimal, factor: Decimal = Decimal(1)) -> NumberValue:
    """The search value of decimal ``d`` times ``factor`` (a unit's, for quantities), with the implicit
    precision range of ``d`` as written, computed in decimals and rounded to floats once."""
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)  # half a unit of the last given digit
    low, high = d - half, d + half
    if factor != 1:  # (a multiplication rounds to the context's 28 digits: not for the plain number)
        d, low, high = d * factor, low * factor, high * factor
    return NumberValue(prefix, float(d), float(low), float(high))


def parse_number(raw: str, name: str) -> NumberValue:
    return value_of(*parse_decimal(raw, name))


def parse_value(raw: str, modifier: str | None, name: str) -> NumberValue:
    return parse_number(raw, name)


def sql(v: NumberValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    return algebra.sql(algebra.for_number(v), f"{alias}.low", f"{alias}.high")


def match(e: IndexEntry, v: NumberValue, modifier: str | None) -> bool:
    return algebra.holds(algebra.for_number(v), e.low, e.high)


# -- MongoDB: ``_s.num`` holds ``{p, lo, hi}`` per value; a prefix is one ``$elemMatch``.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [("num", {"p": e.param, "lo": e.low, "hi": e.high})]


def mongo(v: NumberValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    return {f"{at}num": {"$elemMatch": {"p": code, **algebra.mongo(algebra.for_number(v))}}}
