"""Search prefixes (https://hl7.org/fhir/R4/search.html#prefix) written once: a prefix and a searched
value become a :data:`Condition` on an indexed range ``[low, high]``, a small value that each store
renders (:func:`sql` for SQLite, :func:`mongo` for MongoDB) and the matcher evaluates (:func:`holds`).
Date, number and quantity parameters build theirs here (:func:`for_date`, :func:`for_number`) and
never compare ranges themselves, so the three evaluations cannot drift apart.

Two families, as the spec defines them (with R the indexed range, S the searched value's range):

- dates (search.html#date): R and S are half-open ``[low, high)`` (a value is its whole precision).
  ``eq`` S contains R; ``ne`` not eq; ``gt`` R extends above S; ``lt`` R extends below S; ``ge`` gt or
  eq; ``le`` lt or eq; ``sa`` R starts after S ends; ``eb`` R ends before S starts; ``ap`` R overlaps
  S widened by 10% of its distance from now (done when the value is parsed).
- numbers and quantities (search.html#number): R is closed ``[low, high]`` (a decimal is a point, a
  Range its bounds); ``eq``/``ne`` use the searched value's implicit precision range ``[slo, shi)``,
  the ordering prefixes the value itself ("``lt100`` means less than exactly 100"): ``gt`` high > v,
  ``lt`` low < v, ``ge`` high >= v, ``le`` low <= v, ``sa`` low > v, ``eb`` high < v; ``ap`` R
  overlaps v +/- 10% of |v| (and at least the precision range).

``ge``/``le`` of dates are simplified to one comparison per side (when not gt, high <= S.high already
holds, so eq reduces to low >= S.low); tests/store/test_search_prefix.py checks every form against
the literal definitions and the three evaluations against each other on real stores.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_exchange.search.query import DateValue, NumberValue

LOW, HIGH = 0, 1  # which end of the indexed range a bound reads

_OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                               ">=": operator.ge}
_MONGO = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_FLIP = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}  # the complement of each comparison


@dataclass(frozen=True, slots=True)
class Bound:
    """``end op value``: one end of the indexed range (LOW or HIGH) compared with a number."""

    end: int
    op: str
    value: int | float


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Either:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition


Condition = Bound | All | Either | Not


def _b(end: int, op: str, value: int | float) -> Bound:
    return Bound(end, op, value)


# -- the algebra ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def for_date(v: DateValue) -> Condition:
    """The condition of a date search value on an indexed half-open range (``ap`` already widened)."""
    p, s_lo, s_hi = v.prefix, v.low, v.high
    eq = All((_b(LOW, ">=", s_lo), _b(HIGH, "<=", s_hi)))
    if p == "eq":
        return eq
    if p == "ne":
        return Not(eq)
    if p == "gt":
        return _b(HIGH, ">", s_hi)
    if p == "lt":
        return _b(LOW, "<", s_lo)
    if p == "ge":
        return Either((_b(HIGH, ">", s_hi), _b(LOW, ">=", s_lo)))
    if p == "le":
        return Either((_b(LOW, "<", s_lo), _b(HIGH, "<=", s_hi)))
    if p == "sa":
        return _b(LOW, ">=", s_hi)
    if p == "eb":
        return _b(HIGH, "<=", s_lo)
    return All((_b(LOW, "<", s_hi), _b(HIGH, ">", s_lo)))  # ap: overlaps the widened range


def approximate(v: NumberValue) -> tuple[float, float]:
    """The range ``ap`` searches: v +/- 10% of |v|, and at least the precision range."""
    gap = abs(v.value) * 0.1
    return min(v.low, v.value - gap), max(v.high, v.value + gap)


@lru_cache(maxsize=4096)
def for_number(v: NumberValue) -> Condition:
    """The condition of a number (or a quantity's number) on an indexed closed range."""
    p, x = v.prefix, v.value
    eq = All((_b(LOW, ">=", v.low), _b(HIGH, "<", v.high)))
    if p == "eq":
        return eq
    if p == "ne":
        return Not(eq)
    if p == "gt":
        return _b(HIGH, ">", x)
    if p == "lt":
        return _b(LOW, "<", x)
    if p == "ge":
        return _b(HIGH, ">=", x)
    if p == "le":
        return _b(LOW, "<=", x)
    if p == "sa":
        return _b(LOW, ">", x)
    if p == "eb":
        return _b(HIGH, "<", x)
    a, b = approximate(v)
    return All((_b(LOW, "<=", b), _b(HIGH, ">=", a)))


# -- evaluations ------------------------------------------------------------------------------------


def holds(c: Condition, low: Any, high: Any) -> bool:
    """The matcher's evaluation on one indexed range."""
    if isinstance(c, Bound):
        return _OPS[c.op](low if c.end == LOW else high, c.value)
    if isinstance(c, All):
        return all(holds(x, low, high) for x in c.parts)
    if isinstance(c, Either):
        return any(holds(x, low, high) for x in c.parts)
    return not holds(c.part, low, high)


def sql(c: Condition, low: str, high: str) -> tuple[str, list[Any]]:
    """SQL over the columns ``low`` and ``high`` (never NULL where the condition is tested) and its
    arguments; ``AND``-able as it is (an OR is parenthesised)."""
    if isinstance(c, Bound):
        return f"{low if c.end == LOW else high} {c.op} ?", [c.value]
    if isinstance(c, Not):
        inner, args = sql(c.part, low, high)
        return f"NOT ({inner})", args
    parts = [sql(x, low, high) for x in c.parts]
    args = [a for _s, xs in parts for a in xs]
    if isinstance(c, All):  # its parts are comparisons, NOT (...) or parenthesised ORs: no parentheses needed
        return " AND ".join(s for s, _a in parts), args
    return "(" + " OR ".join(f"({s})" if isinstance(x, All) else s
                             for (s, _a), x in zip(parts, c.parts, strict=True)) + ")", args


def negate(c: Condition) -> Condition:
    """``Not`` pushed down to the bounds (De Morgan, each comparison flipped): the ranges have both ends,
    so the complement of ``low >= x`` is ``low < x``."""
    if isinstance(c, Bound):
        return Bound(c.end, _FLIP[c.op], c.value)
    if isinstance(c, All):
        return Either(tuple(negate(x) for x in c.parts))
    if isinstance(c, Either):
        return All(tuple(negate(x) for x in c.parts))
    return c.part


def mongo(c: Condition, low: str = "lo", high: str = "hi") -> dict[str, Any]:
    """A MongoDB filter over the fields ``low`` and ``high`` of one array element (inside ``$elemMatch``:
    both ends must come from the same value)."""
    if isinstance(c, Bound):
        return {low if c.end == LOW else high: {_MONGO[c.op]: c.value}}
    if isinstance(c, Not):
        return mongo(negate(c.part), low, high)
    parts = [mongo(x, low, high) for x in c.parts]
    if isinstance(c, Either):
        return {"$or": parts}
    return conjunction(parts)


def conjunction(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Filter clauses ANDed: merged into one dict when their keys differ, else ``$and``."""
    out: dict[str, Any] = {}
    for part in parts:
        if any(k in out for k in part):
            return {"$and": parts}
        out.update(part)
    return out
