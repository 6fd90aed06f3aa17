"""Quantities: System.Quantity, http://hl7.org/fhirpath/N1/#quantity, with UCUM units
(https://hl7.org/fhir/R4/fhirpath.html#quantity) and calendar durations.

Unit conversion goes through :mod:`ucum`, the server's one UCUM implementation; calendar
durations of a week or less equal their UCUM units, year and month map to private units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_exchange.fhir.fhirpath.numbers import (
    decimals_equivalent,
    format_number,
    normalize_decimal,
    parse_number,
    to_decimal,
)
from fhir_exchange.fhir.fhirpath.ucum import Dimensions, parse_unit

UCUM = "http://unitsofmeasure.org"


CALENDAR_UNITS: dict[str, str] = {
    "year": "year", "years": "year", "month": "month", "months": "month",
    "week": "week", "weeks": "week", "day": "day", "days": "day",
    "hour": "hour", "hours": "hour", "minute": "minute", "minutes": "minute",
    "second": "second", "seconds": "second", "millisecond": "millisecond",
    "milliseconds": "millisecond",
}  # fmt: skip
# Calendar durations of a week or less equal their UCUM counterparts (spec: "Date/Time
# Arithmetic"); year and month do not, so they get a unit of their own.
_CALENDAR_TO_UCUM = {
    "week": "wk", "day": "d", "hour": "h", "minute": "min", "second": "s", "millisecond": "ms",
    "year": "{cal_year}", "month": "{cal_month}",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Quantity:
    """A System.Quantity. ``unit`` is a UCUM code, or a calendar keyword when ``calendar``."""

    value: Decimal | int
    unit: str = "1"
    calendar: bool = False

    def __str__(self) -> str:
        value = format_number(self.value)
        return f"{value} {self.unit}" if self.calendar else f"{value} '{self.unit}'"

    @property
    def ucum(self) -> str:
        """The unit as UCUM (calendar keywords mapped; year/month to private units)."""
        if self.calendar or self.unit in CALENDAR_UNITS:
            return _CALENDAR_TO_UCUM[CALENDAR_UNITS[self.unit]]
        return self.unit

    def to_fhir(self) -> dict[str, Any]:
        if self.calendar:
            return {"value": self.value, "unit": self.unit}
        return {"value": self.value, "unit": self.unit, "system": UCUM, "code": self.unit}


def quantity_in_base(q: Quantity) -> tuple[Decimal, Dimensions] | None:
    canon = parse_unit(q.ucum)
    if canon is None:
        return None
    return Decimal(q.value) * canon[0], canon[1]


def convert_quantity(q: Quantity, unit: str) -> Quantity | None:
    """``q`` expressed in ``unit`` (UCUM, or a calendar keyword), None if not commensurable."""
    target = Quantity(Decimal(1), unit, unit in CALENDAR_UNITS)
    a, b = quantity_in_base(q), quantity_in_base(target)
    if a is None or b is None or a[1] != b[1]:
        return None
    return Quantity(normalize_decimal(a[0] / b[0]), target.unit, target.calendar)


def comparable_units(a: Quantity, b: Quantity) -> bool:
    ca, cb = quantity_in_base(a), quantity_in_base(b)
    return ca is not None and cb is not None and ca[1] == cb[1]


def compare_quantities(a: Quantity, b: Quantity) -> int | None:
    """-1/0/1 after unit conversion, None when the units do not compare."""
    if a.unit == b.unit and a.calendar == b.calendar:
        va, vb = Decimal(a.value), Decimal(b.value)
    else:
        ca, cb = quantity_in_base(a), quantity_in_base(b)
        if ca is None or cb is None or ca[1] != cb[1]:
            return None
        va, vb = ca[0], cb[0]
    return (va > vb) - (va < vb)


def quantity_equivalent(a: Quantity, b: Quantity) -> bool:
    """Equal at the precision of the less precise operand, after conversion to ``a``'s unit."""
    converted = b if (a.unit, a.calendar) == (b.unit, b.calendar) else convert_quantity(b, a.unit)
    if converted is None:
        return False
    return decimals_equivalent(Decimal(a.value), Decimal(converted.value), Decimal(b.value))


def parse_quantity_text(text: str) -> Quantity | None:
    """``toQuantity()`` on a string: ``'1 day'``, ``"1 'wk'"``, ``'1.0'`` (unit ``'1'``)."""
    m = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?)\s*(?:'([^']+)'|([A-Za-z]+))?\s*", text)
    if not m:
        return None
    value = parse_number(m.group(1))
    if m.group(2) is not None:
        return Quantity(value, m.group(2))
    if m.group(3) is not None:
        # Unquoted units must be calendar keywords; '1 wk' is not a quantity (UCUM needs quotes).
        return Quantity(value, m.group(3), True) if m.group(3) in CALENDAR_UNITS else None
    return Quantity(value, "1")


def fhir_quantity(data: Mapping[str, Any]) -> Quantity | None:
    """A FHIR Quantity (or Age, Duration, ...) as a System.Quantity (R4 fhirpath.html#quantity)."""
    value = data.get("value")
    if value is None or isinstance(value, bool):
        return None
    system, code, unit = data.get("system"), data.get("code"), data.get("unit")
    if code and system in (UCUM, None):
        return Quantity(to_decimal(value), code)
    if unit and unit in CALENDAR_UNITS:
        return Quantity(to_decimal(value), unit, True)
    return Quantity(to_decimal(value), str(code or unit or "1"))
