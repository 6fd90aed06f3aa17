"""Math functions: http://hl7.org/fhirpath/N1/#math, and the aggregates sum/min/max/avg
(FHIRPath 2.0 http://hl7.org/fhirpath/2.0.0/#aggregates).

Decimals keep their precision where the spec asks (``round``), transcendental functions are
computed at a higher precision and rounded once.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from fhir_exchange.fhir.fhirpath.arithmetic import plus
from fhir_exchange.fhir.fhirpath.equality import compare_items
from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import int_param, param_value, single_value
from fhir_exchange.fhir.fhirpath.numbers import is_number, normalize_decimal, to_decimal
from fhir_exchange.fhir.fhirpath.quantity import Quantity
from fhir_exchange.fhir.fhirpath.values import as_quantity, describe, system_value


def _number_input(data: list[Any], fn: str) -> Any:
    value = single_value(data, f"input of {fn}()")
    if value is None:
        return None
    quantity = as_quantity(value)
    if quantity is not None:
        return quantity
    if not is_number(value):
        raise FhirPathEvaluationError(f"{fn}() needs a number, got {describe(value)}")
    return value


def _math(fn_name: str, op: Callable[[Decimal], Decimal | int | None], keep_int: bool = False) -> Any:
    def fn(ctx: Any, data: list[Any]) -> list[Any]:
        value = _number_input(data, fn_name)
        if value is None:
            return []
        if isinstance(value, Quantity):
            result = op(to_decimal(value.value))
            return [] if result is None else [Quantity(result, value.unit, value.calendar)]
        if keep_int and isinstance(value, int):
            result = op(Decimal(value))
            return [] if result is None else [int(result)]
        result = op(to_decimal(value))
        return [] if result is None else [result]

    return fn


def _precise(compute: Callable[[], Decimal]) -> Decimal:
    # Work with guard digits, then round to the default 28 so ln(16)/ln(2) comes out as 4.
    with localcontext() as c:
        c.prec = 40
        value = compute()
    return normalize_decimal(+value)


def _sqrt(d: Decimal) -> Decimal | None:
    return None if d < 0 else _precise(d.sqrt)


def _ln(d: Decimal) -> Decimal | None:
    return None if d <= 0 else _precise(d.ln)


def _round(ctx: Any, data: list[Any], precision: Any = None) -> list[Any]:
    value = _number_input(data, "round")
    if value is None:
        return []
    places = int_param(precision) if precision is not None else 0
    if places is None:
        places = 0
    if places < 0:
        raise FhirPathEvaluationError("round() precision must be >= 0")
    quantum = Decimal(1).scaleb(-places)
    if isinstance(value, Quantity):
        return [Quantity(to_decimal(value.value).quantize(quantum, ROUND_HALF_UP), value.unit, value.calendar)]
    return [to_decimal(value).quantize(quantum, ROUND_HALF_UP)]


def _log(ctx: Any, data: list[Any], base: Any) -> list[Any]:
    value = _number_input(data, "log")
    b = param_value(base)
    if value is None or b is None:
        return []
    x, y = to_decimal(value), to_decimal(b)
    if x <= 0 or y <= 0 or y == 1:
        return []
    return [_precise(lambda: x.ln() / y.ln())]


def _power(ctx: Any, data: list[Any], exponent: Any) -> list[Any]:
    value = _number_input(data, "power")
    e = param_value(exponent)
    if value is None or e is None:
        return []
    if isinstance(value, int) and isinstance(e, int) and e >= 0:
        return [value**e]
    x, y = to_decimal(value), to_decimal(e)
    if x < 0 and y != y.to_integral_value():
        return []  # no complex results
    try:
        return [_precise(lambda: x**y)]
    except ArithmeticError:
        return []


def _sum(ctx: Any, data: list[Any]) -> list[Any]:
    values = [system_value(x) for x in data]
    if not values:
        return [0]
    total = values[0]
    for value in values[1:]:
        total = plus(ctx, [total], [value])[0]
    return [total]


def _extreme(sign: int) -> Any:
    def fn(ctx: Any, data: list[Any]) -> list[Any]:
        best = None
        for item in data:
            value = system_value(item)
            if best is None or (compare_items(value, best) or 0) * sign > 0:
                best = value
        return [] if best is None else [best]

    return fn


def _avg(ctx: Any, data: list[Any]) -> list[Any]:
    values = [system_value(x) for x in data]
    if not values:
        return []
    if not all(is_number(v) for v in values):
        raise FhirPathEvaluationError("avg() needs numbers")
    total = sum((to_decimal(v) for v in values), Decimal(0))
    return [normalize_decimal(total / len(values))]


ENTRIES: dict[str, dict[str, Any]] = {
    "abs": {"fn": _math("abs", lambda d: abs(d), keep_int=True)},
    "ceiling": {"fn": _math("ceiling", lambda d: int(d.to_integral_value(ROUND_CEILING)))},
    "floor": {"fn": _math("floor", lambda d: int(d.to_integral_value(ROUND_FLOOR)))},
    "truncate": {"fn": _math("truncate", lambda d: int(d.to_integral_value(ROUND_DOWN)))},
    "sqrt": {"fn": _math("sqrt", _sqrt)},
    "exp": {"fn": _math("exp", lambda d: _precise(d.exp))},
    "ln": {"fn": _math("ln", _ln)},
    "log": {"fn": _log, "arity": {1: ["Any"]}},
    "power": {"fn": _power, "arity": {1: ["Any"]}},
    "round": {"fn": _round, "arity": {0: [], 1: ["Any"]}},
    "sum": {"fn": _sum},
    "min": {"fn": _extreme(-1)},
    "max": {"fn": _extreme(1)},
    "avg": {"fn": _avg},
}
