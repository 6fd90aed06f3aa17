"""Equality, equivalence and ordering of single items: http://hl7.org/fhirpath/N1/#equality,
http://hl7.org/fhirpath/N1/#equivalence and http://hl7.org/fhirpath/N1/#comparison.

``None`` from :func:`items_equal` / :func:`compare_items` is the spec's *empty*: values of
different precision, or quantities whose units do not convert.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.numbers import decimals_equivalent, to_decimal
from fhir_exchange.fhir.fhirpath.quantity import Quantity, compare_quantities, quantity_equivalent, quantity_in_base
from fhir_exchange.fhir.fhirpath.temporal import Temporal, compare_temporal
from fhir_exchange.fhir.fhirpath.values import as_quantity, describe, system_value


def _coerce_pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Implicit conversions between the two operands (spec 'Conversion' table)."""
    if isinstance(a, Temporal) and isinstance(b, str):
        b = _parse_like(a, b) or b
    elif isinstance(b, Temporal) and isinstance(a, str):
        a = _parse_like(b, a) or a
    if isinstance(a, Quantity) or isinstance(b, Quantity):
        a = as_quantity(a) or a
        b = as_quantity(b) or b
    return a, b


def _parse_like(t: Temporal, text: str) -> Temporal | None:
    if t.kind == "Time":
        return Temporal.parse_time(text)
    return Temporal.parse_datetime(text) if "T" in text else Temporal.parse_date(text)


def _complex_data(value: Any) -> Any:
    if isinstance(value, ResourceNode):
        return value.data
    return value


def items_equal(a: Any, b: Any) -> bool | None:
    """FHIRPath ``=`` on two single items; None means empty (unknown)."""
    a, b = system_value(a), system_value(b)
    a, b = _coerce_pair(a, b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return to_decimal(a) == to_decimal(b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, Temporal) and isinstance(b, Temporal):
        if (a.kind == "Time") != (b.kind == "Time"):
            return False
        c = compare_temporal(a, b)
        return None if c is None else c == 0
    if isinstance(a, Quantity) and isinstance(b, Quantity):
        c = compare_quantities(a, b)
        return None if c is None else c == 0
    da, db = _complex_data(a), _complex_data(b)
    if isinstance(da, Mapping) and isinstance(db, Mapping):
        return _json_equal(da, db)
    return False


def items_equivalent(a: Any, b: Any) -> bool:
    """FHIRPath ``~`` on two single items."""
    a, b = system_value(a), system_value(b)
    a, b = _coerce_pair(a, b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return decimals_equivalent(to_decimal(a), to_decimal(b))
    if isinstance(a, str) and isinstance(b, str):
        return _normalize_space(a) == _normalize_space(b)
    if isinstance(a, Temporal) and isinstance(b, Temporal):
        if (a.kind == "Time") != (b.kind == "Time"):
            return False
        return compare_temporal(a, b) == 0
    if isinstance(a, Quantity) and isinstance(b, Quantity):
        return quantity_equivalent(a, b)
    da, db = _complex_data(a), _complex_data(b)
    if isinstance(da, Mapping) and isinstance(db, Mapping):
        return _json_equivalent(da, db)
    return False


def compare_items(a: Any, b: Any) -> int | None:
    """Ordering for ``<``, ``>``...: -1/0/1, None for empty; raises on incomparable types."""
    a, b = system_value(a), system_value(b)
    a, b = _coerce_pair(a, b)
    if _is_num(a) and _is_num(b):
        da, db = to_decimal(a), to_decimal(b)
        return (da > db) - (da < db)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if isinstance(a, Temporal) and isinstance(b, Temporal):
        return compare_temporal(a, b)
    if isinstance(a, Quantity) and isinstance(b, Quantity):
        return compare_quantities(a, b)
    raise FhirPathEvaluationError(f"cannot compare {describe(a)} with {describe(b)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | Decimal | float) and not isinstance(v, bool)


def _normalize_space(s: str) -> str:
    return " ".join(s.lower().split())


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if _is_num(a) and _is_num(b):
        return to_decimal(a) == to_decimal(b)
    return type(a) is type(b) and a == b


def _json_equivalent(a: Any, b: Any) -> bool:
    # Equivalence ignores order in repeating elements and case/whitespace in strings; the
    # ``id`` of elements does not take part (spec: "child properties ... excluding id").
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        ka = {k for k in a if k != "id"}
        kb = {k for k in b if k != "id"}
        return ka == kb and all(_json_equivalent(a[k], b[k]) for k in ka)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False
        remaining = list(b)
        for x in a:
            for i, y in enumerate(remaining):
                if _json_equivalent(x, y):
                    del remaining[i]
                    break
            else:
                return False
        return True
    if isinstance(a, str) and isinstance(b, str):
        return _normalize_space(a) == _normalize_space(b)
    if _is_num(a) and _is_num(b):
        return decimals_equivalent(to_decimal(a), to_decimal(b))
    return type(a) is type(b) and a == b


def identity_key(item: Any) -> Any:
    """A hashable key under which ``=``-equal items collide (for distinct, union, in, ...).

    Exact for strings, booleans, numbers (1 and 1.0 share a key) and JSON objects; dates and
    quantities use a normalized text form, which is equality for values of equal precision.
    """
    value = system_value(item)
    if isinstance(value, bool):
        return ("b", value)
    if _is_num(value):
        return ("n", to_decimal(value).normalize())
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, Temporal):
        if value.tz is not None and value.has_time and value.tz != 0:
            shifted = value.with_python(value.to_python() - timedelta(minutes=value.tz))
            return ("t", value.kind, shifted.fields, value.micro, len(value.fields))
        return ("t", value.kind, value.fields, value.micro, len(value.fields))
    if isinstance(value, Quantity):
        base = quantity_in_base(value)
        return ("q", base[0].normalize(), base[1]) if base else ("q", str(value))
    data = _complex_data(value)
    try:
        return ("j", json.dumps(data, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return ("o", id(data))
