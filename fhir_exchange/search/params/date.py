"""date parameters (https://hl7.org/fhir/R4/search.html#date): every value is a range at its precision
(``2020`` is the whole year), kept as a half-open UTC range ``[low, high)`` in microseconds. Period
is [start, end] with open ends unbounded; Timing indexes its events and its bounds period.

Prefixes (search.html#prefix) compare the resource's range with the search value's range:
:func:`fhir_exchange.search.prefix.for_date`, the one definition SQLite, MongoDB and the matcher
evaluate. ``ap`` widens the search range by 10% of its distance from now (at least a day), once here.
Values without a time zone are taken as UTC (the spec leaves this to the server; Blaze uses UTC
on its default configuration). A time without a zone in a *search* value is also UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search import prefix as algebra
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.query import DATE_MAX, DATE_MIN, PREFIXES, DateValue

TABLE = "search_date"
COLUMNS = ("low", "high")
SORT_COLUMN = "low"
MODIFIERS = frozenset({"missing"})

_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<z>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_EPOCH = date(1970, 1, 1).toordinal()
_US_DAY = 86_400_000_000


def _days(y: int, m: int, d: int) -> int:
    if y > 9999:  # the day after 9999-12-31
        return date(9999, 12, 31).toordinal() + 1 - _EPOCH
    return date(y, m, d).toordinal() - _EPOCH


def parse_range(s: str) -> tuple[int, int] | None:
    """A FHIR date/dateTime/instant as [low, high) microseconds (UTC); None when malformed."""
    m = _RE.match(s)
    if m is None:
        return None
    try:
        y = int(m["y"])
        if m["m"] is None:
            return _days(y, 1, 1) * _US_DAY, _days(y + 1, 1, 1) * _US_DAY
        mo = int(m["m"])
        if not 1 <= mo <= 12:
            return None
        if m["d"] is None:
            ny, nm = (y + 1, 1) if mo == 12 else (y, mo + 1)
            return _days(y, mo, 1) * _US_DAY, _days(ny, nm, 1) * _US_DAY
        d = int(m["d"])
        day = _days(y, mo, d)
        if m["H"] is None:
            return day * _US_DAY, (day + 1) * _US_DAY
        hh, mm = int(m["H"]), int(m["M"])
        if hh > 24 or mm > 59:
            return None
        low = day * _US_DAY + (hh * 3600 + mm * 60) * 1_000_000
        if m["S"] is None:
            width = 60_000_000
        else:
            ss = int(m["S"])
            if ss > 60:
                return None
            low += ss * 1_000_000
            width = 1_000_000
            if m["f"] is not None:
                frac = m["f"]
                digits = min(len(frac), 6)
                low += int(frac[:digits].ljust(6, "0"))
                width = 10 ** (6 - digits)
        z = m["z"]
        if z and z != "Z":
            sign = 1 if z[0] == "+" else -1
            low -= sign * (int(z[1:3]) * 3600 + int(z[4:6]) * 60) * 1_000_000
        return low, low + width
    except ValueError:
        return None


def _period(p: dict[str, Any]) -> tuple[int, int] | None:
    start = parse_range(p["start"]) if isinstance(p.get("start"), str) else None
    end = parse_range(p["end"]) if isinstance(p.get("end"), str) else None
    if start is None and end is None:
        return None
    return (start[0] if start else DATE_MIN), (end[1] if end else DATE_MAX)


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, _typ = item
    ranges: list[tuple[int, int]] = []
    if isinstance(node, str):
        r = parse_range(node)
        if r:
            ranges.append(r)
    elif isinstance(node, dict):
        if "start" in node or "end" in node:
            p = _period(node)
            if p:
                ranges.append(p)
        elif "event" in node or "repeat" in node:  # Timing
            for ev in node.get("event") or ():
                r = parse_range(ev) if isinstance(ev, str) else None
                if r:
                    ranges.append(r)
            bounds = (node.get("repeat") or {}).get("boundsPeriod")
            if isinstance(bounds, dict):
                p = _period(bounds)
                if p:
                    ranges.append(p)
    return [IndexEntry(code, "date", low=lo, high=hi) for lo, hi in ranges]


def split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and not raw[:2].isdigit():
        return raw[:2], raw[2:]
    return "eq", raw


def parse_value(raw: str, modifier: str | None, name: str, now: datetime | None = None) -> DateValue:
    prefix, rest = split_prefix(raw)
    if raw[:1].isalpha() and prefix == "eq" and not raw.startswith("eq"):
        raise invalid(f"Unknown prefix in '{raw}' for search parameter '{name}'", name)
    r = parse_range(rest)
    if r is None:
        raise invalid(f"Invalid date '{raw}' for search parameter '{name}': expected [prefix]YYYY[-MM[-DD"
                      "[Thh:mm[:ss[.fff]][zone]]]]", name)
    low, high = r
    if prefix == "ap":
        now_us = int(((now or datetime.now(UTC)) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
        gap = max(abs(now_us - low), abs(now_us - high)) // 10
        gap = max(gap, _US_DAY)
        low, high = low - gap, high + gap
    return DateValue(prefix, low, high)


def sql(v: DateValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    return algebra.sql(algebra.for_date(v), f"{alias}.low", f"{alias}.high")


def match(e: IndexEntry, v: DateValue, modifier: str | None) -> bool:
    return algebra.holds(algebra.for_date(v), e.low, e.high)


# -- MongoDB: ``_s.date`` holds ``{p, lo, hi}`` per value; a prefix is one ``$elemMatch`` (both ends
# must come from the same value), served by the (p, lo, hi) index.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [("date", {"p": e.param, "lo": e.low, "hi": e.high})]


def mongo(v: DateValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    return {f"{at}date": {"$elemMatch": {"p": code, **algebra.mongo(algebra.for_date(v))}}}
