"""Primitive datatype checks: https://hl7.org/fhir/R4/datatypes.html#primitive and https://hl7.org/fhir/R4/json.html#primitive.

The lexical rules come from the primitive types' own StructureDefinitions (the
``http://hl7.org/fhir/StructureDefinition/regex`` extension on ``<type>.value``), so a package that
tightens a regex is honoured. What a regex cannot say lives here: the JSON type each primitive is
represented with (json.html: boolean as JSON ``true``/``false``, integer types and decimal as JSON
numbers, everything else as a string), the 32-bit range of ``integer``, calendar validity of dates
("Dates SHALL be valid dates"), and the 1 MB size limit of ``string``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fhir_exchange.validation.issues import MsgId

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
MAX_STRING_BYTES: Final = 1024 * 1024

# Failure of one primitive value: (message id, issue code, diagnostics).
Failure = tuple[str, str, str]
Checker = Callable[[Any], Failure | None]

# The R4 regexes, used when a package does not carry its own (they are the values in the core package).
DEFAULT_REGEX: Final[dict[str, str]] = {
    "boolean": "true|false",
    "code": r"[^\s]+(\s[^\s]+)*",
    "date": r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?",
    "dateTime": r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?",
    "decimal": r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
    "id": r"[A-Za-z0-9\-\.]{1,64}",
    "instant": r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))",
    "integer": r"-?([0]|([1-9][0-9]*))",
    "markdown": r"[ \r\n\t\S]+",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "positiveInt": r"[1-9][0-9]*",
    "string": r"[ \r\n\t\S]+",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?",
    "unsignedInt": r"[0]|([1-9][0-9]*)",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
}

# json.html#primitive: which JSON type carries each primitive.
JSON_BOOL: Final = frozenset({"boolean"})
JSON_INT: Final = frozenset({"integer", "positiveInt", "unsignedInt"})
JSON_NUMBER: Final = frozenset({"decimal"})
# Types whose lexical space forbids surrounding whitespace through their regex; string and markdown
# allow it (datatypes.html#string), which is worth a warning only.
WS_WARN: Final = frozenset({"string", "markdown"})
DATE_TYPES: Final = frozenset({"date", "dateTime", "instant"})


@dataclass(frozen=True, slots=True)
class PrimitiveType:
    code: str
    regex: str | None
    check: Checker


def _date_is_real(value: str) -> bool:
    """The regexes accept 2021-02-31; the calendar does not."""
    if len(value) < 10:
        return True
    try:
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    except ValueError:
        return False
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _base64_ok(value: str) -> bool:
    # The spec regex (\s*([0-9a-zA-Z\+/=]){4}\s*)+ backtracks badly on long bad input; this is equivalent.
    compact = "".join(value.split())
    if len(compact) % 4:
        return False
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def make_checker(code: str, regex: str | None, max_length: int | None = None) -> Checker:
    """A fast checker for one primitive type: JSON type first, then lexical form, then value space."""
    if code in JSON_BOOL:
        def check_bool(v: Any) -> Failure | None:
            if v is True or v is False:
                return None
            return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                    f"boolean must be a JSON true or false, not {json_type_name(v)} {v!r}")
        return check_bool

    if code in JSON_INT:
        low = {"integer": INT32_MIN, "unsignedInt": 0, "positiveInt": 1}[code]

        def check_int(v: Any) -> Failure | None:
            if type(v) is not int:
                if type(v) is float and v.is_integer():
                    return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                            f"{code} must be a JSON number without a decimal point, not {v!r}")
                return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                        f"{code} must be a JSON integer number, not {json_type_name(v)} {v!r}")
            if v < low or v > INT32_MAX:
                return (MsgId.PRIMITIVE_RANGE, "value", f"{code} value {v} is outside {low}..{INT32_MAX}")
            return None
        return check_int

    if code in JSON_NUMBER:
        def check_decimal(v: Any) -> Failure | None:
            # isinstance: fhir.jsonio.Decimal (a float that keeps its text, for precision) is a float.
            if type(v) is int or isinstance(v, float):
                return None
            return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                    f"decimal must be a JSON number, not {json_type_name(v)} {v!r}")
        return check_decimal

    if code == "xhtml":
        def check_xhtml(v: Any) -> Failure | None:
            if type(v) is str:
                return None
            return (MsgId.PRIMITIVE_JSON_TYPE, "structure", f"xhtml must be a JSON string, not {json_type_name(v)}")
        return check_xhtml

    if code == "base64Binary":
        def check_b64(v: Any) -> Failure | None:
            if type(v) is not str:
                return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                        f"base64Binary must be a JSON string, not {json_type_name(v)}")
            if not _base64_ok(v):
                return (MsgId.PRIMITIVE_FORMAT, "value", "The value is not valid base64 content")
            return None
        return check_b64

    # The spec's regexes are Java regexes: \s and \d are ASCII there (U+00A0 is \S), as with re.ASCII.
    pattern = re.compile(regex, re.ASCII).fullmatch if regex else None
    is_date = code in DATE_TYPES
    is_markdown = code == "markdown"
    ws_warn = code in WS_WARN
    limit = max_length or (MAX_STRING_BYTES if code in ("string", "markdown") else None)

    def check_str(v: Any) -> Failure | None:
        if type(v) is not str:
            return (MsgId.PRIMITIVE_JSON_TYPE, "structure",
                    f"{code} must be a JSON string, not {json_type_name(v)} {v!r}")
        if not v:
            return (MsgId.PRIMITIVE_EMPTY, "value", f"{code} value must not be empty (json.html: no empty strings)")
        control = _CONTROL(v)
        if control is not None:  # the regexes' \S lets them through
            return (MsgId.PRIMITIVE_FORMAT, "value", f"{code} value contains the control character "
                    f"U+{ord(control.group()):04X} at position {control.start()} (datatypes.html#string: "
                    "none below U+0020 except tab, carriage return and line feed)")
        if pattern is not None and pattern(v) is None:
            return (MsgId.PRIMITIVE_FORMAT, "value", f"The value {_short(v)!r} is not a valid {code}")
        if is_markdown and "<" in v and (tag := _GFM_DISALLOWED(v)) is not None:
            return (MsgId.MARKDOWN_HTML, "value", f"markdown must not contain the raw HTML tag <{tag.group(1)}> "
                    "(datatypes.html#markdown: GitHub Flavored Markdown, whose tag filter disallows it)")
        if is_date and not _date_is_real(v):
            return (MsgId.PRIMITIVE_FORMAT, "value", f"The value {v!r} is not a real calendar date")
        # Characters are at most 4 bytes in UTF-8, so only long strings need the encoding cost.
        if limit is not None and len(v) * 4 > limit and len(v.encode()) > limit:
            return (MsgId.PRIMITIVE_TOO_LONG, "value", f"{code} value is longer than {limit} bytes")
        if ws_warn and (v[0].isspace() or v[-1].isspace()):
            return (MsgId.PRIMITIVE_WHITESPACE, "value", f"{code} value {_short(v)!r} starts or ends with whitespace")
        return None
    return check_str


# datatypes.html#string: "Strings SHALL NOT contain Unicode character points below 32, except for
# u0009 (horizontal tab), u0010 (carriage return) and u0013 (line feed)"; every string type derives
# from string. A NUL stored went back out in every read and search answer.
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]").search


# GFM "Disallowed Raw HTML" (the tagfilter extension): these tags are never passed through.
_GFM_DISALLOWED: Final = re.compile(r"<\s*/?\s*(title|textarea|style|xmp|iframe|noembed|noframes|script|plaintext)\b",
                             re.IGNORECASE).search


def _short(v: str) -> str:
    return v if len(v) <= 80 else v[:77] + "..."


def regex_of(sd: dict[str, Any]) -> str | None:
    """The regex extension on ``<type>.value`` of a primitive type's StructureDefinition."""
    for e in (sd.get("snapshot") or sd.get("differential") or {}).get("element", []):
        if e.get("path", "").endswith(".value"):
            for t in e.get("type", []):
                for ext in t.get("extension", []):
                    if ext.get("url") == "http://hl7.org/fhir/StructureDefinition/regex":
                        return ext.get("valueString")
    return None


def build_primitive(code: str, sd: dict[str, Any] | None) -> PrimitiveType:
    regex = (regex_of(sd) if sd else None) or DEFAULT_REGEX.get(code)
    return PrimitiveType(code, regex, make_checker(code, regex))


# Severity of each primitive failure: surrounding whitespace in a string is allowed (warning only).
