"""JSON in and out of the server, keeping the precision of decimals.

https://hl7.org/fhir/R4/datatypes.html#decimal: "the precision of the decimal value has significance
(e.g. 0.010 is regarded as different to 0.01), and the original precision should be preserved". A JSON
number parsed into a binary float loses that: ``1.10`` comes back as ``1.1``, ``0.1e-9`` as ``1e-10``,
and ``0.12345678901234567890`` is cut to 17 digits. HAPI FHIR keeps them (BigDecimal).

:func:`loads` parses with orjson, which is also the judge of what is valid JSON. Only when the bytes
hold a number with a fraction or an exponent are they parsed again with the standard library, turning
the numbers orjson would write differently into :class:`Decimal`: a ``float`` that remembers its text.
:func:`dumps` writes a :class:`Decimal` back as that text (an ``orjson.Fragment``), everything else
exactly as orjson does. Bodies without such numbers stay on orjson alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A JSON number with a fraction or an exponent, in value position (after ``:`` ``[`` or ``,``, before
# ``,`` ``]`` or ``}``). Text inside strings rarely looks like that (times such as "10:00:00.5" end in a
# quote or a letter); when it does, it only costs the slower parse, never correctness.
_FLOAT_LITERAL = re.compile(rb"(?<=[:\[,])\s*-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)(?=\s*[,\]}])")


def _has_float(data: bytes) -> bool:
    return _FLOAT_LITERAL.search(data) is not None


class Decimal(float):
    """A JSON decimal: compares and computes as a float, serialises as the text it was written with."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Decimal:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj

    def __repr__(self) -> str:
        return self.text


def _decimal(text: str) -> float:
    value = float(text)
    # A plain float when orjson writes it back exactly as it came (1.5, 0.25); else keep the text.
    return value if orjson.dumps(value) == text.encode() else Decimal(text)


def loads(raw: bytes | str) -> Any:
    """Parse JSON (raises ``orjson.JSONDecodeError`` on invalid input), keeping decimal precision."""
    doc = orjson.loads(raw)
    data = raw.encode() if isinstance(raw, str) else raw
    if not _has_float(data):
        return doc
    try:
        return json.loads(data.decode("utf-8"), parse_float=_decimal)
    except (RecursionError, ValueError):  # deeper than the stdlib parser goes: keep orjson's reading
        return doc


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(obj.text)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    """Serialise like ``orjson.dumps``, writing :class:`Decimal` values as their original text."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_INDENT_2 if pretty else 0)


def canonical(obj: Any) -> bytes:
    """``obj`` with sorted keys: equal for documents that say the same, whatever their key order."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_SORT_KEYS)
