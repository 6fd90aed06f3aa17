"""Functions on collections: existence http://hl7.org/fhirpath/N1/#existence, filtering and
projection http://hl7.org/fhirpath/N1/#filtering-and-projection, subsetting
http://hl7.org/fhirpath/N1/#subsetting, combining http://hl7.org/fhirpath/N1/#combining, tree
navigation http://hl7.org/fhirpath/N1/#tree-navigation and the collection operators
http://hl7.org/fhirpath/N1/#collections-2 (``|``, ``in``, ``contains``); plus ``sort()``.

Where fhirpathpy is too lenient (singletons, ``$this`` after iteration) or compares with its own
equality, these replace its functions; ``select``/``repeat``/``aggregate``/``coalesce`` stay
fhirpathpy's, wrapped to restore ``$this``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fhirpathpy.engine.invocations import navigation
from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.fhir.fhirpath.equality import compare_items, identity_key, items_equal
from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import (
    FHIRPATHPY_REGISTRY,
    Expr,
    boolean_of,
    collapse,
    operator_entry,
    scoped,
    single_item,
    single_value,
)


def _distinct_items(items: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for it in items:
        key = identity_key(it)
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


def _union(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    return _distinct_items(list(a) + list(b))


def _combine(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    return list(a) + list(b)


def _intersect(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    keys = {identity_key(x) for x in b}
    return _distinct_items([x for x in a if identity_key(x) in keys])


def _exclude(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    keys = {identity_key(x) for x in b}
    return [x for x in a if identity_key(x) not in keys]


def _subset_of(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    keys = {identity_key(x) for x in b}
    return [all(identity_key(x) in keys for x in a)]


def _superset_of(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    return _subset_of(ctx, b, a)


def _distinct(ctx: Any, data: list[Any]) -> list[Any]:
    return _distinct_items(data)


def _is_distinct(ctx: Any, data: list[Any]) -> list[bool]:
    return [len(_distinct_items(data)) == len(data)]


def _in(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    if not a:
        return []
    item = single_item(a, "left operand of 'in'")
    return [any(items_equal(item, y) is True for y in b)]


def _contains(ctx: Any, a: list[Any], b: list[Any]) -> list[bool]:
    return _in(ctx, b, a)


def _where(ctx: dict[str, Any], data: list[Any], criteria: Expr) -> list[Any]:
    out = []
    for i, item in enumerate(data):
        ctx["$index"] = i
        if boolean_of(criteria(item)) is True:
            out.append(item)
    return out


def _exists(ctx: dict[str, Any], data: list[Any], criteria: Expr | None = None) -> list[bool]:
    if criteria is None:
        return [bool(data)]
    return [bool(_where(ctx, data, criteria))]


def _all(ctx: dict[str, Any], data: list[Any], criteria: Expr) -> list[bool]:
    for i, item in enumerate(data):
        ctx["$index"] = i
        if boolean_of(criteria(item)) is not True:
            return [False]
    return [True]


def _single_fn(ctx: Any, data: list[Any]) -> list[Any]:
    return [single_item(data)] if data else []


def _iif(
    ctx: dict[str, Any], data: list[Any], criterion: Expr, true_result: Expr, otherwise: Expr | None = None
) -> list[Any]:
    if len(data) > 1:
        raise FhirPathEvaluationError("iif() on a collection of more than one item")
    # Criteria must be boolean here (spec: iif()), not just "one item".
    if boolean_of(criterion(data), strict=True) is True:
        return true_result(data)
    return otherwise(data) if otherwise is not None else []


class _Descending:
    """Marks a sort key written with a leading '-' (compile step wraps it in ``__desc()``)."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values


def _desc(ctx: Any, data: list[Any]) -> list[Any]:
    return [_Descending(data)]


def _sort(ctx: dict[str, Any], data: list[Any], *keys: Expr) -> list[Any]:
    if not keys:
        keys = (lambda item: [item],)

    def key_values(item: Any) -> list[tuple[bool, Any]]:
        out = []
        for key in keys:
            result = key(item)
            descending = len(result) == 1 and isinstance(result[0], _Descending)
            values = result[0].values if descending else result
            out.append((descending, single_value(values, "sort key")))
        return out

    decorated = [(key_values(item), item) for item in data]

    def compare(x: tuple[list[tuple[bool, Any]], Any], y: tuple[list[tuple[bool, Any]], Any]) -> int:
        for (desc, a), (_, b) in zip(x[0], y[0], strict=True):
            if a is None or b is None:
                # Items without a key go first in either direction.
                if a is None and b is None:
                    continue
                return -1 if a is None else 1
            c = compare_items(a, b) or 0
            if c:
                return -c if desc else c
        return 0

    decorated.sort(key=functools.cmp_to_key(compare))
    return [item for _, item in decorated]


def _typed(items: list[Any]) -> list[Any]:
    # fhirpathpy's children() concatenates the parent's path and crashes on untyped nodes
    # (a context passed without context_path): give those the "unknown type" path "_".
    out = []
    for item in items:
        if isinstance(item, ResourceNode) and item.path is None and isinstance(item.data, Mapping):
            item = ResourceNode(item.data, "_", item._data, item.propName, item.index)
        elif isinstance(item, Mapping) and "resourceType" not in item:
            item = ResourceNode(item, "_")
        out.append(item)
    return out


def _children(ctx: Any, data: list[Any]) -> list[Any]:
    return collapse(navigation.children(ctx, _typed(data)))


def _descendants(ctx: Any, data: list[Any]) -> list[Any]:
    return collapse(navigation.descendants(ctx, _typed(data)))


def _collapse(ctx: Any, data: list[Any]) -> list[Any]:
    return collapse(data)


ENTRIES: dict[str, dict[str, Any]] = {
    "|": operator_entry(_union),
    "inOp": operator_entry(_in),
    "containsOp": operator_entry(_contains),
    "exists": {"fn": scoped(_exists), "arity": {0: [], 1: ["Expr"]}},
    "all": {"fn": scoped(_all), "arity": {1: ["Expr"]}},
    "where": {"fn": scoped(_where), "arity": {1: ["Expr"]}},
    "single": {"fn": _single_fn},
    "iif": {"fn": scoped(_iif), "arity": {2: ["Expr", "Expr"], 3: ["Expr", "Expr", "Expr"]}},
    "distinct": {"fn": _distinct},
    "isDistinct": {"fn": _is_distinct},
    "union": {"fn": _union, "arity": {1: ["AnyAtRoot"]}},
    "combine": {"fn": _combine, "arity": {1: ["AnyAtRoot"]}},
    "intersect": {"fn": _intersect, "arity": {1: ["AnyAtRoot"]}},
    "exclude": {"fn": _exclude, "arity": {1: ["AnyAtRoot"]}},
    "subsetOf": {"fn": _subset_of, "arity": {1: ["AnyAtRoot"]}},
    "supersetOf": {"fn": _superset_of, "arity": {1: ["AnyAtRoot"]}},
    "sort": {"fn": scoped(_sort), "variadic": "Expr"},
    "children": {"fn": _children},
    "descendants": {"fn": _descendants},
    "select": {"fn": scoped(FHIRPATHPY_REGISTRY["select"]["fn"]), "arity": {1: ["Expr"]}},
    "repeat": {"fn": scoped(FHIRPATHPY_REGISTRY["repeat"]["fn"]), "arity": {1: ["Expr"]}},
    "aggregate": {"fn": scoped(FHIRPATHPY_REGISTRY["aggregate"]["fn"]), "arity": {1: ["Expr"], 2: ["Expr", "Any"]}},
    "coalesce": {"fn": scoped(FHIRPATHPY_REGISTRY["coalesce"]["fn"]), "variadic": "Expr"},
    # internal, inserted by the compile step
    "__collapse": {"fn": _collapse},
    "__desc": {"fn": _desc},
}
