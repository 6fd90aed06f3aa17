"""Equality, comparison and boolean operators: http://hl7.org/fhirpath/N1/#equality,
http://hl7.org/fhirpath/N1/#comparison and http://hl7.org/fhirpath/N1/#boolean-logic.

Equality respects precision and timezones (a comparison of values known to different precisions
is empty), Date is never DateTime, quantities compare after UCUM conversion; the boolean
operators are three-valued. Item semantics live in :mod:`equality`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_exchange.fhir.fhirpath.equality import compare_items, items_equal, items_equivalent
from fhir_exchange.fhir.fhirpath.items import boolean_of, operator_entry, single_item

# --------------------------------------------------------------------------------------------
# Equality and comparison (spec: Equality, Comparison)
# --------------------------------------------------------------------------------------------


def _equal(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    if not a or not b:
        return []
    if len(a) != len(b):
        return [False]
    result: bool | None = True
    for x, y in zip(a, b, strict=True):
        r = items_equal(x, y)
        if r is False:
            return [False]
        if r is None:
            result = None
    return [] if result is None else [True]


def _not_equal(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    r = _equal(ctx, a, b)
    return [not r[0]] if r else []


def _equivalent(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    if not a and not b:
        return [True]
    if len(a) != len(b):
        return [False]
    remaining = list(b)
    for x in a:
        for i, y in enumerate(remaining):
            if items_equivalent(x, y):
                del remaining[i]
                break
        else:
            return [False]
    return [True]


def _not_equivalent(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    return [not _equivalent(ctx, a, b)[0]]


def _comparison(test: Callable[[int], bool]) -> Callable[..., list[bool]]:
    def compare(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
        if not a or not b:
            return []
        c = compare_items(single_item(a, "operand"), single_item(b, "operand"))
        return [] if c is None else [test(c)]

    return compare


# --------------------------------------------------------------------------------------------
# Boolean logic (three-valued, spec: Boolean logic)
# --------------------------------------------------------------------------------------------


def _and(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    x, y = boolean_of(a), boolean_of(b)
    if x is False or y is False:
        return [False]
    if x is None or y is None:
        return []
    return [True]


def _or(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    x, y = boolean_of(a), boolean_of(b)
    if x is True or y is True:
        return [True]
    if x is None or y is None:
        return []
    return [False]


def _xor(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    x, y = boolean_of(a), boolean_of(b)
    return [] if x is None or y is None else [x != y]


def _implies(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    x, y = boolean_of(a), boolean_of(b)
    if x is False:
        return [True]
    if x is True:
        return [] if y is None else [y]
    return [True] if y is True else []


def _not(ctx: Any, data: list[Any]) -> list[bool]:
    value = boolean_of(data)
    return [] if value is None else [not value]


ENTRIES: dict[str, dict[str, Any]] = {
    "=": operator_entry(_equal),
    "!=": operator_entry(_not_equal),
    "~": operator_entry(_equivalent),
    "!~": operator_entry(_not_equivalent),
    "<": operator_entry(_comparison(lambda c: c < 0)),
    ">": operator_entry(_comparison(lambda c: c > 0)),
    "<=": operator_entry(_comparison(lambda c: c <= 0)),
    ">=": operator_entry(_comparison(lambda c: c >= 0)),
    "and": operator_entry(_and),
    "or": operator_entry(_or),
    "xor": operator_entry(_xor),
    "implies": operator_entry(_implies),
    "not": {"fn": _not},
}
