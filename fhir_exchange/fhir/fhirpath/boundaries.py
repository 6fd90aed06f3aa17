"""Boundaries and precision: lowBoundary(), highBoundary(), precision(), comparable(), the FHIRPath
2.0 additions http://hl7.org/fhirpath/2.0.0/#lowboundaryprecision-integer-decimal--date--datetime--time
(the official suite's period invariant uses them).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from fhir_exchange.fhir.fhirpath.arithmetic import days_in_month
from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import int_param, single_value
from fhir_exchange.fhir.fhirpath.numbers import decimal_places, is_number, to_decimal
from fhir_exchange.fhir.fhirpath.quantity import Quantity, comparable_units
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import as_quantity, describe

_MAX_DECIMAL_PRECISION = 31


def decimal_boundary(value: Decimal | int, precision: int | None, high: bool) -> Decimal | None:
    if precision is None:
        precision = 8
    if precision < 0 or precision > _MAX_DECIMAL_PRECISION:
        return None
    d = to_decimal(value)
    if d < 0:
        result = decimal_boundary(-d, precision, not high)
        return None if result is None else -result
    with localcontext() as c:
        c.prec = 80
        half = Decimal(5).scaleb(-(decimal_places(d) + 1))
        bound = d + half if high else d - half
        # Low rounds down; high rounds half-up: this is what the official test data expects
        # (0.0034.highBoundary(1) is 0.0, 1.587.highBoundary(2) is 1.59).
        return bound.quantize(Decimal(1).scaleb(-precision), ROUND_HALF_UP if high else ROUND_FLOOR)


_TEMPORAL_PRECISIONS = {"Date": (4, 6, 8), "DateTime": (4, 6, 8, 10, 12, 14, 17), "Time": (2, 4, 6, 9)}


def temporal_boundary(t: Temporal, precision: int | None, high: bool) -> Temporal | None:
    allowed = _TEMPORAL_PRECISIONS[t.kind]
    if precision is None:
        precision = allowed[-1]
    if precision not in allowed:
        return None
    n_fields = allowed.index(precision) + 1
    with_fraction = n_fields == len(allowed) and t.kind != "Date"
    if with_fraction:
        n_fields -= 1
    fields = list(t.fields)
    offset = 3 if t.kind == "Time" else 0
    if t.kind == "DateTime" and len(fields) == 4:
        fields.append(0)  # an hour alone is not a FHIR time: read T08 as T08:00
    if t.kind == "Time" and len(fields) == 1:
        fields.append(0)
    while len(fields) < n_fields:
        i = len(fields) + offset
        if i == 1:
            fields.append(12 if high else 1)
        elif i == 2:
            fields.append(days_in_month(fields[0], fields[1]) if high else 1)
        elif i == 3:
            fields.append(23 if high else 0)
        else:
            fields.append(59 if high else 0)
    fields = fields[:n_fields]
    micro, frac_digits = 0, 0
    if with_fraction:
        frac_digits = 3
        micro = t.micro if t.has_fraction else (999000 if high else 0)
    tz, tz_text = t.tz, t.tz_text
    if t.kind == "DateTime" and n_fields > 3 and tz is None:
        # Unknown offset: the earliest instant is at +14:00, the latest at -12:00.
        tz, tz_text = (-720, "-12:00") if high else (840, "+14:00")
    if t.kind == "DateTime" and n_fields <= 3:
        tz, tz_text = None, None
    return Temporal(t.kind, tuple(fields), micro, frac_digits, tz, tz_text)


def _boundary(high: bool) -> Any:
    def fn(ctx: Any, data: list[Any], precision: Any = None) -> list[Any]:
        value = single_value(data)
        if value is None:
            return []
        p = int_param(precision) if precision is not None else None
        if isinstance(value, Temporal):
            result: Any = temporal_boundary(value, p, high)
        elif (q := as_quantity(value)) is not None:
            b = decimal_boundary(q.value, p, high)
            result = None if b is None else Quantity(b, q.unit, q.calendar)
        elif is_number(value):
            result = decimal_boundary(value, p, high)
        else:
            raise FhirPathEvaluationError(f"no boundary for {describe(value)}")
        return [] if result is None else [result]

    return fn


def _precision(ctx: Any, data: list[Any]) -> list[int]:
    value = single_value(data)
    if value is None:
        return []
    if isinstance(value, Temporal):
        return [value.precision_digits()]
    if (q := as_quantity(value)) is not None:
        value = q.value
    if isinstance(value, Decimal):
        return [decimal_places(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        return [0]
    raise FhirPathEvaluationError(f"precision() of {describe(value)}")


def _comparable(ctx: Any, data: list[Any], other: list[Any]) -> list[bool]:
    a = as_quantity(single_value(data))
    b = as_quantity(single_value(other))
    if a is None or b is None:
        return []
    return [comparable_units(a, b)]


ENTRIES: dict[str, dict[str, Any]] = {
    "lowBoundary": {"fn": _boundary(high=False), "arity": {0: [], 1: ["Any"]}},
    "highBoundary": {"fn": _boundary(high=True), "arity": {0: [], 1: ["Any"]}},
    "precision": {"fn": _precision},
    "comparable": {"fn": _comparable, "arity": {1: ["Any"]}},
}
