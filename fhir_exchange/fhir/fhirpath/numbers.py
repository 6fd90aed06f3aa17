"""Numbers: System.Integer and System.Decimal, http://hl7.org/fhirpath/N1/#literals.

Decimals are Python ``Decimal`` (never float), printed without exponent; equivalence of decimals
is equality at the precision of the less precise operand (http://hl7.org/fhirpath/N1/#equivalence).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # repr() is the shortest string that round-trips, so 0.1 stays 0.1 (not 0.1000000000000000055)
        return Decimal(repr(value))
    return Decimal(value)


def parse_number(text: str) -> int | Decimal:
    return Decimal(text) if "." in text else int(text)


def normalize_decimal(d: Decimal) -> Decimal:
    """Drop exponent notation that division and conversion produce, keep significant zeros."""
    exponent = d.as_tuple().exponent  # "n", "N" or "F" (NaN, sNaN, Infinity): nothing to drop
    if isinstance(exponent, int) and exponent > 0 and d == d.to_integral_value():
        return d.quantize(Decimal(1))
    return d


def format_number(value: Decimal | int) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)  # never 1E+1


def decimal_places(d: Decimal) -> int:
    exponent = d.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def decimals_equivalent(a: Decimal, b: Decimal, precision_of: Decimal | None = None) -> bool:
    """Decimal equivalence: equal when rounded to the precision of the less precise operand."""
    places = min(decimal_places(a), decimal_places(precision_of if precision_of is not None else b))
    quantum = Decimal(1).scaleb(-places)
    return a.quantize(quantum) == b.quantize(quantum)


def is_number(v: Any) -> bool:
    """A System Integer or Decimal (a bool is neither)."""
    return isinstance(v, int | Decimal) and not isinstance(v, bool)
