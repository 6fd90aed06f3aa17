"""Date, DateTime and Time values: http://hl7.org/fhirpath/N1/#literals, ordered by the rules of
http://hl7.org/fhirpath/N1/#comparison.

Precision rules follow the spec: seconds and fractions of a second are one precision level when
comparing; comparing values of different precision that agree as far as both go is *empty*.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError

_DATE_RE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_TIME_RE = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")
_DATETIME_RE = re.compile(
    r"(?P<date>\d{4}(?:-\d{2}(?:-\d{2})?)?)"
    r"(?:T(?P<time>\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?"
)

# Precision in digits, as returned by precision(): year .. millisecond.
_DT_DIGITS = (4, 6, 8, 10, 12, 14, 17)
_TIME_DIGITS = (2, 4, 6, 9)


@dataclass(frozen=True, slots=True)
class Temporal:
    """A System.Date, System.DateTime or System.Time value with its precision.

    ``fields`` holds the components that are present: year, month, day, hour, minute, second for
    dates and date-times, hour, minute, second for times. ``micro``/``frac_digits`` keep the
    fraction of a second as written, ``tz`` the offset in minutes (None when absent).
    """

    kind: str  # "Date" | "DateTime" | "Time"
    fields: tuple[int, ...]
    micro: int = 0
    frac_digits: int = 0
    tz: int | None = None
    tz_text: str | None = None

    # -- parsing -----------------------------------------------------------------------------
    @staticmethod
    def parse_date(text: str) -> Temporal | None:
        m = _DATE_RE.fullmatch(text)
        if not m:
            return None
        fields = tuple(int(g) for g in m.groups() if g is not None)
        return Temporal("Date", fields) if _valid_date(fields) else None

    @staticmethod
    def parse_datetime(text: str) -> Temporal | None:
        m = _DATETIME_RE.fullmatch(text)
        if not m:
            return None
        fields = [int(p) for p in m.group("date").split("-")]
        micro = frac_digits = 0
        time = m.group("time")
        if time:
            tm = _TIME_RE.fullmatch(time)
            assert tm is not None
            fields += [int(g) for g in tm.groups()[:3] if g is not None]
            if tm.group(4):
                frac_digits = len(tm.group(4))
                micro = int((tm.group(4) + "000000")[:6])
        tz_text = m.group("tz")
        if tz_text and not time:
            return None
        if not _valid_date(tuple(fields[:3])) or not _valid_time(tuple(fields[3:])):
            return None
        return Temporal("DateTime", tuple(fields), micro, frac_digits, _tz_minutes(tz_text), tz_text)

    @staticmethod
    def parse_time(text: str) -> Temporal | None:
        m = _TIME_RE.fullmatch(text)
        if not m:
            return None
        fields = tuple(int(g) for g in m.groups()[:3] if g is not None)
        if not _valid_time(fields):
            return None
        frac = m.group(4) or ""
        return Temporal("Time", fields, int((frac + "000000")[:6]) if frac else 0, len(frac))

    @staticmethod
    def from_datetime(dt: datetime, kind: str = "DateTime") -> Temporal:
        """``now()``-style value with millisecond precision in ``dt``'s own offset."""
        if kind == "Date":
            return Temporal("Date", (dt.year, dt.month, dt.day))
        micro = (dt.microsecond // 1000) * 1000
        if kind == "Time":
            return Temporal("Time", (dt.hour, dt.minute, dt.second), micro, 3)
        offset = dt.utcoffset()
        tz = None if offset is None else int(offset.total_seconds() // 60)
        fields = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        return Temporal("DateTime", fields, micro, 3, tz, None if tz is None else _tz_text(tz))

    # -- properties --------------------------------------------------------------------------
    @property
    def has_fraction(self) -> bool:
        return self.frac_digits > 0

    def precision_digits(self) -> int:
        n = len(self.fields) + (1 if self.has_fraction else 0)
        return (_TIME_DIGITS if self.kind == "Time" else _DT_DIGITS)[n - 1]

    @property
    def has_time(self) -> bool:
        return self.kind == "Time" or len(self.fields) > 3

    def __str__(self) -> str:
        if self.kind == "Time":
            return _time_text(self.fields, self.micro, self.frac_digits)
        date = "-".join(f"{v:04d}" if i == 0 else f"{v:02d}" for i, v in enumerate(self.fields[:3]))
        if len(self.fields) <= 3:
            return date
        time = _time_text(self.fields[3:], self.micro, self.frac_digits)
        return f"{date}T{time}{self.tz_text or ''}"

    def __repr__(self) -> str:
        return self.literal()

    def literal(self) -> str:
        """The FHIRPath literal form (``@2014-01``, ``@T10:30``, ``@2015T``)."""
        if self.kind == "Time":
            return f"@T{self}"
        if self.kind == "DateTime" and len(self.fields) <= 3:
            return f"@{self}T"
        return f"@{self}"

    # -- helpers for arithmetic and boundaries -------------------------------------------------
    def to_python(self) -> datetime:
        """The value as a naive ``datetime`` in its own (wall clock) offset, absent parts minimal."""
        parts = [2000, 1, 1, *self.fields] if self.kind == "Time" else list(self.fields)
        parts += [1, 1, 1, 0, 0, 0][len(parts) :]
        return datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], self.micro)

    def with_python(self, dt: datetime) -> Temporal:
        """Same precision, offset and fraction digits, components taken from ``dt``."""
        all_fields = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        start = 3 if self.kind == "Time" else 0
        fields = all_fields[start : start + len(self.fields)]
        micro = dt.microsecond if self.has_fraction else 0
        return Temporal(self.kind, fields, micro, self.frac_digits, self.tz, self.tz_text)


def _valid_date(fields: tuple[int, ...]) -> bool:
    if len(fields) >= 2 and not 1 <= fields[1] <= 12:
        return False
    return not (len(fields) == 3 and not 1 <= fields[2] <= calendar.monthrange(fields[0], fields[1])[1])


def _valid_time(fields: tuple[int, ...]) -> bool:
    limits = (23, 59, 59)
    return all(0 <= v <= limits[i] for i, v in enumerate(fields))


def _tz_minutes(tz_text: str | None) -> int | None:
    if not tz_text:
        return None
    if tz_text == "Z":
        return 0
    sign = -1 if tz_text[0] == "-" else 1
    return sign * (int(tz_text[1:3]) * 60 + int(tz_text[4:6]))


def _tz_text(minutes: int) -> str:
    if minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _time_text(fields: tuple[int, ...], micro: int, frac_digits: int) -> str:
    text = ":".join(f"{v:02d}" for v in fields)
    if frac_digits and len(fields) == 3:
        text += "." + f"{micro:06d}"[: max(frac_digits, 1)].ljust(frac_digits, "0")
    return text


def _levels(t: Temporal) -> list[int]:
    """Components to compare, with seconds and their fraction as one level (in microseconds)."""
    levels = list(t.fields)
    sec_index = 2 if t.kind == "Time" else 5
    if len(levels) > sec_index:
        levels[sec_index] = levels[sec_index] * 1_000_000 + t.micro
    return levels


def _utc_levels(t: Temporal) -> list[int]:
    """Components after shifting to UTC; only called when ``t`` has an hour and an offset."""
    dt = t.to_python() - timedelta(minutes=t.tz or 0)
    shifted = t.with_python(dt)
    return _levels(Temporal(t.kind, shifted.fields, t.micro, t.frac_digits))


def compare_temporal(a: Temporal, b: Temporal) -> int | None:
    """-1/0/1, or None when precision (or a missing timezone) leaves the answer open.

    Raises for Date/DateTime against Time, which the spec makes an error for ordering.
    """
    if (a.kind == "Time") != (b.kind == "Time"):
        raise FhirPathEvaluationError(f"cannot compare {a.kind} with {b.kind}")
    la, lb = _levels(a), _levels(b)
    if a.has_time and b.has_time and a.kind != "Time":
        if (a.tz is None) != (b.tz is None):
            # One side in local time: the spec leaves the offset to the implementation; being
            # explicit about not knowing is safer than guessing the server's zone.
            return None
        if a.tz is not None and a.tz != b.tz:
            la, lb = _utc_levels(a), _utc_levels(b)
    for x, y in zip(la, lb, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(la) == len(lb) else None
