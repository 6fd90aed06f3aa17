"""Conversion functions: http://hl7.org/fhirpath/N1/#conversion.

``toX()`` and ``convertsToX()`` for Boolean, Integer, Decimal, String, Date, DateTime, Time and
Quantity (with unit conversion, ``toQuantity('g')``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import str_param
from fhir_exchange.fhir.fhirpath.numbers import is_number, to_decimal
from fhir_exchange.fhir.fhirpath.quantity import Quantity, convert_quantity, parse_quantity_text
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import as_quantity, system_value

_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


def _convert_input(data: list[Any]) -> Any:
    if len(data) > 1:
        raise FhirPathEvaluationError(f"conversion of a collection of {len(data)} items")
    return None if not data else system_value(data[0])


def to_boolean(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if is_number(v):
        return {1: True, 0: False}.get(v) if v in (0, 1) else None
    if isinstance(v, str):
        low = v.lower()
        return True if low in _TRUE else False if low in _FALSE else None
    return None


def to_integer(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str) and _INT_RE.fullmatch(v):
        return int(v)
    return None


def to_decimal_value(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return Decimal(1) if v else Decimal(0)
    if is_number(v):
        return to_decimal(v)
    if isinstance(v, str) and _DEC_RE.fullmatch(v):
        return Decimal(v)
    return None


def to_string(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, int | str):
        return str(v)
    if isinstance(v, Temporal | Quantity):
        return str(v)
    return None


def to_date(v: Any) -> Temporal | None:
    if isinstance(v, Temporal):
        return None if v.kind == "Time" else Temporal("Date", v.fields[:3])
    if isinstance(v, str):
        return Temporal.parse_date(v) or _date_part(Temporal.parse_datetime(v))
    return None


def _date_part(t: Temporal | None) -> Temporal | None:
    return None if t is None else Temporal("Date", t.fields[:3])


def to_datetime(v: Any) -> Temporal | None:
    if isinstance(v, Temporal):
        return None if v.kind == "Time" else Temporal("DateTime", *_temporal_parts(v))
    if isinstance(v, str):
        return Temporal.parse_datetime(v)
    return None


def _temporal_parts(t: Temporal) -> tuple[Any, ...]:
    return t.fields, t.micro, t.frac_digits, t.tz, t.tz_text


def to_time(v: Any) -> Temporal | None:
    if isinstance(v, Temporal):
        return v if v.kind == "Time" else None
    if isinstance(v, str):
        return Temporal.parse_time(v[1:] if v.startswith("T") else v)
    return None


def to_quantity(v: Any, unit: str | None = None) -> Quantity | None:
    q: Quantity | None
    if isinstance(v, bool):
        q = Quantity(Decimal(1) if v else Decimal(0), "1")
    elif is_number(v):
        q = Quantity(v, "1")
    elif isinstance(v, Quantity):
        q = v
    elif isinstance(v, str):
        q = parse_quantity_text(v)
    else:
        q = as_quantity(v)
    if q is not None and unit is not None and unit != q.unit:
        q = convert_quantity(q, unit)
    return q


def _converter(convert: Callable[[Any], Any]) -> Any:
    def fn(ctx: Any, data: list[Any]) -> list[Any]:
        v = _convert_input(data)
        if v is None:
            return []
        result = convert(v)
        return [] if result is None else [result]

    return fn


def _converts(convert: Callable[[Any], Any]) -> Any:
    def fn(ctx: Any, data: list[Any]) -> list[bool]:
        v = _convert_input(data)
        return [] if v is None else [convert(v) is not None]

    return fn


def _to_quantity(ctx: Any, data: list[Any], unit: Any = None) -> list[Any]:
    v = _convert_input(data)
    if v is None:
        return []
    q = to_quantity(v, str_param(unit) if unit is not None else None)
    return [] if q is None else [q]


def _converts_to_quantity(ctx: Any, data: list[Any], unit: Any = None) -> list[bool]:
    v = _convert_input(data)
    if v is None:
        return []
    return [to_quantity(v, str_param(unit) if unit is not None else None) is not None]


ENTRIES: dict[str, dict[str, Any]] = {
    "toBoolean": {"fn": _converter(to_boolean)},
    "convertsToBoolean": {"fn": _converts(to_boolean)},
    "toInteger": {"fn": _converter(to_integer)},
    "convertsToInteger": {"fn": _converts(to_integer)},
    "toDecimal": {"fn": _converter(to_decimal_value)},
    "convertsToDecimal": {"fn": _converts(to_decimal_value)},
    "toString": {"fn": _converter(to_string)},
    "convertsToString": {"fn": _converts(to_string)},
    "toDate": {"fn": _converter(to_date)},
    "convertsToDate": {"fn": _converts(to_date)},
    "toDateTime": {"fn": _converter(to_datetime)},
    "convertsToDateTime": {"fn": _converts(to_datetime)},
    "toTime": {"fn": _converter(to_time)},
    "convertsToTime": {"fn": _converts(to_time)},
    "toQuantity": {"fn": _to_quantity, "arity": {0: [], 1: ["Any"]}},
    "convertsToQuantity": {"fn": _converts_to_quantity, "arity": {0: [], 1: ["Any"]}},
}
