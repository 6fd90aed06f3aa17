"""Value constraints of ElementDefinition: https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.fixed_x_.

``fixed[x]``: the instance value is exactly the fixed value (for complex types: the same elements,
nothing more). ``pattern[x]``: every element the pattern has is present with the same value, arrays
matching when each pattern item is matched by some instance item; other elements may appear.
``minValue[x]``/``maxValue[x]`` order dates, times, numbers and Quantities (UCUM units converted where
:mod:`ucum` knows them); a Duration limit on a date is relative to now (minValueDuration 100 a on
a birthDate: not more than 100 years ago), as the HL7 reference validator reads it;
``maxLength`` counts characters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.ucum import canonical, compare_quantities

UCUM: Final = "http://unitsofmeasure.org"


def json_equal(a: Any, b: Any) -> bool:
    """Exact equality of JSON values; 1 and 1.0 are the same decimal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for k, pv in pattern.items():
            if k not in value:
                return False
            if not matches_pattern(value[k], pv):
                return False
        return True
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(v, p) for v in items) for p in pattern)
    if isinstance(value, list):
        return any(matches_pattern(v, pattern) for v in value)
    return json_equal(value, pattern)


def temporal(v: str) -> tuple[Any, int] | None:
    """A comparable point and its precision (4 year … 7 seconds-with-zone)."""
    try:
        if len(v) == 4:
            return date(int(v), 1, 1), 1
        if len(v) == 7:
            return date(int(v[:4]), int(v[5:7]), 1), 2
        if len(v) == 10:
            return date.fromisoformat(v), 3
        if "T" in v:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt, 4
        if ":" in v:
            return time.fromisoformat(v), 5
    except ValueError:
        return None
    return None


def compare(type_code: str, a: Any, b: Any) -> int | None:
    """-1/0/1 for a <, =, > b; None when the two cannot be ordered."""
    if type_code in ("integer", "positiveInt", "unsignedInt", "decimal"):
        try:
            da, db = Decimal(str(a)), Decimal(str(b))
        except InvalidOperation:
            return None
        return (da > db) - (da < db)
    if type_code in ("date", "dateTime", "instant", "time"):
        if not isinstance(a, str) or not isinstance(b, str):
            return None
        ta, tb = temporal(a), temporal(b)
        if ta is None or tb is None:
            return None
        (pa, prec_a), (pb, prec_b) = ta, tb
        if prec_a != prec_b:
            # Compare at the coarser precision: a year is below a date when the whole year is.
            if isinstance(pa, datetime):
                pa = pa.date()
            if isinstance(pb, datetime):
                pb = pb.date()
            if isinstance(pa, time) or isinstance(pb, time):
                return None
            lo = min(prec_a, prec_b, 3)
            key_a = (pa.year, pa.month if lo >= 2 else 0, pa.day if lo >= 3 else 0)
            key_b = (pb.year, pb.month if lo >= 2 else 0, pb.day if lo >= 3 else 0)
            return (key_a > key_b) - (key_a < key_b)
        return (pa > pb) - (pa < pb)
    if type_code in ("Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "Money"):
        if not isinstance(a, dict) or not isinstance(b, dict) or "value" not in a or "value" not in b:
            return None
        unit_a = (a.get("system"), a.get("code") or a.get("unit") or a.get("currency"))
        unit_b = (b.get("system"), b.get("code") or b.get("unit") or b.get("currency"))
        if unit_a == unit_b:
            return compare("decimal", a["value"], b["value"])
        if unit_a[0] == unit_b[0] == UCUM and isinstance(unit_a[1], str) and isinstance(unit_b[1], str):
            try:
                return compare_quantities(Decimal(str(a["value"])), unit_a[1], Decimal(str(b["value"])), unit_b[1])
            except InvalidOperation:
                return None
        return None
    return None


def duration_limit(now: datetime, duration: dict[str, Any], sign: int) -> str | None:
    """``now`` moved back (sign -1) or forward (+1) by a UCUM time Duration, as a dateTime string."""
    c = canonical(str(duration.get("code"))) if duration.get("system") in (UCUM, None) else None
    try:
        value = Decimal(str(duration.get("value")))
    except InvalidOperation:
        return None
    if c is None or c[0] != "time":
        return None
    seconds = float(value * c[1])
    try:
        point = now + timedelta(seconds=sign * seconds)
    except OverflowError:
        return None
    return point.isoformat()


def describe(v: Any) -> str:
    if isinstance(v, (dict, list)):
        import orjson

        text = orjson.dumps(v).decode()
        return text if len(text) < 200 else text[:197] + "..."
    return repr(v)
