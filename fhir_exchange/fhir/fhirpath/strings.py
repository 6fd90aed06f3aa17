"""String manipulation: http://hl7.org/fhirpath/N1/#string-manipulation, with the FHIRPath 2.0
additions (``matchesFull``, ``split``, ``join``, ``encode``/``decode``, ``escape``/``unescape``).
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Callable
from typing import Any

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import int_param, param_value, single_string, str_param
from fhir_exchange.fhir.fhirpath.values import describe, system_value


def _string_fn(op: Callable[..., Any]) -> Any:
    """A string function: empty input or any empty parameter gives empty (spec: String Manipulation)."""

    def fn(ctx: Any, data: list[Any], *params: Any) -> list[Any]:
        s = single_string(data)
        if s is None:
            return []
        values = [param_value(p) for p in params]
        if any(v is None for v in values):
            return []
        result = op(s, *values)
        if result is None:
            return []
        return result if isinstance(result, list) else [result]

    return fn


def _substring(s: str, start: Any, length: Any = None) -> str | None:
    if start < 0 or start >= len(s):
        return None
    if length is None:
        return s[start:]
    return s[start : start + max(0, length)]


def _substring_fn(ctx: Any, data: list[Any], start: Any, length: Any = None) -> list[str]:
    s = single_string(data)
    st = int_param(start)
    if s is None or st is None:
        return []
    ln = int_param(length) if length is not None else None
    if length is not None and ln is None:
        return [s[st:]] if 0 <= st < len(s) else []
    result = _substring(s, st, ln)
    return [] if result is None else [result]


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return _compile_regex(pattern)
    except re.error as exc:
        raise FhirPathEvaluationError(f"invalid regular expression {pattern!r}: {exc}") from exc


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compile_regex(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        # FHIRPath regexes run in single-line mode: '.' matches newlines (spec: matches()).
        compiled = re.compile(pattern, re.DOTALL)
        if len(_REGEX_CACHE) < 4096:
            _REGEX_CACHE[pattern] = compiled
    return compiled


def _replace(s: str, pattern: str, substitution: str) -> str:
    if pattern == "":
        return substitution + substitution.join(s) + substitution
    return s.replace(pattern, substitution)


def _replace_matches(s: str, pattern: str, substitution: str) -> str:
    if pattern == "":
        return s
    return _regex(pattern).sub(re.sub(r"\$(\d+)", r"\\\1", substitution), s)


def _split(s: str, separator: str) -> list[str]:
    return s.split(separator) if separator else list(s)


def _join(ctx: Any, data: list[Any], separator: Any = None) -> list[str]:
    sep = str_param(separator) if separator is not None else ""
    parts = []
    for item in data:
        v = system_value(item)
        if not isinstance(v, str):
            raise FhirPathEvaluationError(f"join() needs strings, got {describe(v)}")
        parts.append(v)
    return [(sep or "").join(parts)]


def _encode(s: str, fmt: str) -> str | None:
    raw = s.encode("utf-8")
    if fmt == "base64":
        return base64.b64encode(raw).decode("ascii")
    if fmt in ("urlbase64", "base64url"):
        return base64.urlsafe_b64encode(raw).decode("ascii")
    if fmt == "hex":
        return raw.hex()
    return None


def _decode(s: str, fmt: str) -> str | None:
    try:
        if fmt == "base64":
            raw = base64.b64decode(s, validate=True)
        elif fmt in ("urlbase64", "base64url"):
            raw = base64.urlsafe_b64decode(s)
        elif fmt == "hex":
            raw = bytes.fromhex(s)
        else:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise FhirPathEvaluationError(f"cannot decode {fmt}: {exc}") from exc


def _escape(s: str, fmt: str) -> str | None:
    if fmt == "html":
        return html.escape(s, quote=True).replace("&#x27;", "&#39;")
    if fmt == "json":
        return json.dumps(s, ensure_ascii=False)[1:-1]
    return None


def _unescape(s: str, fmt: str) -> str | None:
    if fmt == "html":
        return html.unescape(s)
    if fmt == "json":
        return _JSON_ESCAPE.sub(_json_unescape_one, s)
    return None


_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[\"\\/bfnrt])")
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _json_unescape_one(m: re.Match[str]) -> str:
    code = m.group(1)
    return chr(int(code[1:], 16)) if code[0] == "u" else _JSON_ESCAPES[code]


def _to_chars(ctx: Any, data: list[Any]) -> list[str]:
    s = single_string(data)
    return [] if s is None else list(s)


def _need_str(value: Any) -> str:
    if not isinstance(value, str):
        raise FhirPathEvaluationError(f"expected a string parameter, got {describe(value)}")
    return value


ENTRIES: dict[str, dict[str, Any]] = {
    "indexOf": {"fn": _string_fn(lambda s, sub: s.find(_need_str(sub))), "arity": {1: ["Any"]}},
    "substring": {"fn": _substring_fn, "arity": {1: ["Any"], 2: ["Any", "Any"]}},
    "startsWith": {"fn": _string_fn(lambda s, p: s.startswith(_need_str(p))), "arity": {1: ["Any"]}},
    "endsWith": {"fn": _string_fn(lambda s, p: s.endswith(_need_str(p))), "arity": {1: ["Any"]}},
    "contains": {"fn": _string_fn(lambda s, p: _need_str(p) in s), "arity": {1: ["Any"]}},
    "upper": {"fn": _string_fn(str.upper)},
    "lower": {"fn": _string_fn(str.lower)},
    "replace": {
        "fn": _string_fn(lambda s, p, r: _replace(s, _need_str(p), _need_str(r))),
        "arity": {2: ["Any", "Any"]},
    },
    "matches": {"fn": _string_fn(lambda s, p: _regex(_need_str(p)).search(s) is not None), "arity": {1: ["Any"]}},
    "matchesFull": {
        "fn": _string_fn(lambda s, p: _regex(_need_str(p)).fullmatch(s) is not None),
        "arity": {1: ["Any"]},
    },
    "replaceMatches": {
        "fn": _string_fn(lambda s, p, r: _replace_matches(s, _need_str(p), _need_str(r))),
        "arity": {2: ["Any", "Any"]},
    },
    "length": {"fn": _string_fn(len)},
    "toChars": {"fn": _to_chars},
    "trim": {"fn": _string_fn(str.strip)},
    "split": {"fn": _string_fn(lambda s, sep: _split(s, _need_str(sep))), "arity": {1: ["Any"]}},
    "join": {"fn": _join, "arity": {0: [], 1: ["Any"]}},
    "encode": {"fn": _string_fn(lambda s, f: _encode(s, _need_str(f))), "arity": {1: ["Any"]}},
    "decode": {"fn": _string_fn(lambda s, f: _decode(s, _need_str(f))), "arity": {1: ["Any"]}},
    "escape": {"fn": _string_fn(lambda s, f: _escape(s, _need_str(f))), "arity": {1: ["Any"]}},
    "unescape": {"fn": _string_fn(lambda s, f: _unescape(s, _need_str(f))), "arity": {1: ["Any"]}},
}
