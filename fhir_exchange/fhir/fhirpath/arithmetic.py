"""Math operators: http://hl7.org/fhirpath/N1/#math-1, with date/time arithmetic
http://hl7.org/fhirpath/N1/#datetime-arithmetic and quantity arithmetic.

``+ - * / div mod &`` on numbers, strings, quantities (units multiplied and divided as UCUM
terms) and dates/times plus or minus a calendar or UCUM time quantity.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import operator_entry, single_value
from fhir_exchange.fhir.fhirpath.numbers import is_number, normalize_decimal, to_decimal
from fhir_exchange.fhir.fhirpath.quantity import CALENDAR_UNITS, Quantity, convert_quantity
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import as_quantity, describe

_UCUM_TIME = {"wk": "week", "d": "day", "h": "hour", "min": "minute", "s": "second", "ms": "millisecond"}


def _operands(a: list[Any], b: list[Any], op: str) -> tuple[Any, Any] | None:
    if not a or not b:
        return None
    x, y = single_value(a, f"operand of '{op}'"), single_value(b, f"operand of '{op}'")
    return as_quantity(x) or x, as_quantity(y) or y


def _number_result(x: Any, y: Any, value: Decimal | int) -> Decimal | int:
    if isinstance(x, int) and isinstance(y, int):
        return int(value)
    return value


def plus(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "+")
    if ops is None:
        return []
    x, y = ops
    if isinstance(x, str) and isinstance(y, str):
        return [x + y]
    if is_number(x) and is_number(y):
        return [x + y if isinstance(x, int) and isinstance(y, int) else to_decimal(x) + to_decimal(y)]
    if isinstance(x, Temporal) and isinstance(y, Quantity):
        return [temporal_add(x, y, 1)]
    if isinstance(x, Quantity) and isinstance(y, Quantity):
        return [_quantity_sum(x, y, 1)]
    raise FhirPathEvaluationError(f"cannot add {describe(y)} to {describe(x)}")


def _minus(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "-")
    if ops is None:
        return []
    x, y = ops
    if is_number(x) and is_number(y):
        return [x - y if isinstance(x, int) and isinstance(y, int) else to_decimal(x) - to_decimal(y)]
    if isinstance(x, Temporal) and isinstance(y, Quantity):
        return [temporal_add(x, y, -1)]
    if isinstance(x, Quantity) and isinstance(y, Quantity):
        return [_quantity_sum(x, y, -1)]
    raise FhirPathEvaluationError(f"cannot subtract {describe(y)} from {describe(x)}")


def _quantity_sum(x: Quantity, y: Quantity, sign: int) -> Quantity:
    converted = convert_quantity(y, x.unit) if (x.unit, x.calendar) != (y.unit, y.calendar) else y
    if converted is None:
        raise FhirPathEvaluationError(f"cannot combine quantities in '{x.unit}' and '{y.unit}'")
    return Quantity(to_decimal(x.value) + sign * to_decimal(converted.value), x.unit, x.calendar)


def _unit_product(u1: str, u2: str, op: str) -> str:
    if op == "/" and u1 == u2:
        return "1"
    if u2 == "1":
        return u1
    if u1 == "1" and op == ".":
        return u2
    return f"{_unit_group(u1)}{op}{_unit_group(u2)}"


def _unit_group(unit: str) -> str:
    return f"({unit})" if any(c in unit for c in "./") else unit


def _multiply(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "*")
    if ops is None:
        return []
    x, y = ops
    if is_number(x) and is_number(y):
        return [_number_result(x, y, to_decimal(x) * to_decimal(y))]
    if isinstance(x, Quantity) and isinstance(y, Quantity):
        return [Quantity(to_decimal(x.value) * to_decimal(y.value), _unit_product(x.ucum, y.ucum, "."))]
    if isinstance(x, Quantity) and is_number(y):
        return [Quantity(to_decimal(x.value) * to_decimal(y), x.unit, x.calendar)]
    if is_number(x) and isinstance(y, Quantity):
        return [Quantity(to_decimal(x) * to_decimal(y.value), y.unit, y.calendar)]
    raise FhirPathEvaluationError(f"cannot multiply {describe(x)} by {describe(y)}")


def _divide(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "/")
    if ops is None:
        return []
    x, y = ops
    if is_number(x) and is_number(y):
        if y == 0:
            return []
        return [normalize_decimal(to_decimal(x) / to_decimal(y))]
    if isinstance(x, Quantity) and isinstance(y, Quantity):
        if y.value == 0:
            return []
        value = normalize_decimal(to_decimal(x.value) / to_decimal(y.value))
        return [Quantity(value, _unit_product(x.ucum, y.ucum, "/"))]
    if isinstance(x, Quantity) and is_number(y):
        if y == 0:
            return []
        return [Quantity(normalize_decimal(to_decimal(x.value) / to_decimal(y)), x.unit, x.calendar)]
    raise FhirPathEvaluationError(f"cannot divide {describe(x)} by {describe(y)}")


def _int_divide(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "div")
    if ops is None:
        return []
    x, y = ops
    if not (is_number(x) and is_number(y)):
        raise FhirPathEvaluationError(f"cannot 'div' {describe(x)} by {describe(y)}")
    if y == 0:
        return []
    return [int((to_decimal(x) / to_decimal(y)).to_integral_value(rounding=ROUND_DOWN))]


def _modulo(ctx: Any, a: list[Any], b: list[Any]) -> list[Any]:
    ops = _operands(a, b, "mod")
    if ops is None:
        return []
    x, y = ops
    if not (is_number(x) and is_number(y)):
        raise FhirPathEvaluationError(f"cannot 'mod' {describe(x)} by {describe(y)}")
    if y == 0:
        return []
    # Decimal's % truncates like the spec's mod (Python's int % floors).
    return [_number_result(x, y, to_decimal(x) % to_decimal(y))]


def _concatenate(ctx: Any, a: list[Any], b: list[Any]) -> list[str]:
    x, y = single_value(a, "string"), single_value(b, "string")
    for v in (x, y):
        if v is not None and not isinstance(v, str):
            raise FhirPathEvaluationError(f"'&' needs strings, got {describe(v)}")
    return [(x or "") + (y or "")]


def temporal_add(t: Temporal, q: Quantity, sign: int) -> Temporal:
    """Date/time arithmetic (spec: Date/Time Arithmetic): calendar durations, or definite UCUM time units.

    The decimal part of the quantity is ignored. The result keeps the value's precision and
    offset; a date (no time) moves by whole days, and a date of year or month precision by whole
    years or months (days counted as 365 per year, 30 per month: the spec only asks that the
    quantity be truncated to the value's precision).
    """
    calendar_unit = q.calendar or q.unit in CALENDAR_UNITS
    unit = CALENDAR_UNITS.get(q.unit) if calendar_unit else _UCUM_TIME.get(q.unit)
    if unit is None:
        # 'a' and 'mo' are not definite durations in UCUM; 'cm' is not a duration at all
        raise FhirPathEvaluationError(f"'{q.unit}' is not a time-valued unit for date arithmetic")
    amount = int(to_decimal(q.value).to_integral_value(rounding=ROUND_DOWN)) * sign
    precision = len(t.fields)
    if unit in ("year", "month"):
        if t.kind == "Time":
            raise FhirPathEvaluationError(f"cannot add {unit}s to a Time")
        months = amount * 12 if unit == "year" else amount
        return t.with_python(_add_months(t.to_python(), _truncate(months, 12) * 12 if precision == 1 else months))
    millis = amount * _MILLIS[unit]
    if t.kind == "Time":
        if unit in ("week", "day"):
            raise FhirPathEvaluationError(f"cannot add {unit}s to a Time")
    elif precision <= 3:
        days = _truncate(millis, _MILLIS["day"])
        if precision < 3:
            months = _truncate(days, 365) * 12 if precision == 1 else _truncate(days, 30)
            return t.with_python(_add_months(t.to_python(), months))
        millis = days * _MILLIS["day"]
    try:
        return t.with_python(t.to_python() + timedelta(milliseconds=millis))
    except OverflowError as exc:
        raise FhirPathEvaluationError(f"date arithmetic out of range: {exc}") from exc


_MILLIS = {
    "week": 604_800_000,
    "day": 86_400_000,
    "hour": 3_600_000,
    "minute": 60_000,
    "second": 1000,
    "millisecond": 1,
}


def _truncate(a: int, b: int) -> int:
    """Integer division rounding toward zero (Python's // floors)."""
    quotient = abs(a) // b
    return quotient if a >= 0 else -quotient


def _add_months(dt: datetime, months: int) -> datetime:
    year, month = divmod(dt.year * 12 + dt.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise FhirPathEvaluationError("date arithmetic out of range")
    return dt.replace(year=year, month=month + 1, day=min(dt.day, days_in_month(year, month + 1)))


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


ENTRIES: dict[str, dict[str, Any]] = {
    "+": operator_entry(plus),
    "-": operator_entry(_minus),
    "*": operator_entry(_multiply),
    "/": operator_entry(_divide),
    "div": operator_entry(_int_divide),
    "mod": operator_entry(_modulo),
    "&": operator_entry(_concatenate),
}
