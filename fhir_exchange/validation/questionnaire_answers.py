"""Constraints on one answer of a QuestionnaireResponse: https://hl7.org/fhir/R4/questionnaire.html#item.

What an item's definition and its SDC extensions
(https://hl7.org/fhir/uv/sdc/behavior.html#answer-constraints) say about each answer value:

- ``minValue``/``maxValue`` (integer, decimal, date, dateTime, time, instant limits; a date answer
  is compared with a dateTime limit at the coarser precision);
- ``maxDecimalPlaces`` (decimal answers), ``minLength`` and ``maxLength`` (string-like answers),
  ``regex`` (string, text and url answers must match it whole, as the SDC IG says);
- ``mimeType`` (the Attachment's ``contentType`` is one of them; ``type/*`` admits a family) and
  ``maxSize`` (``Attachment.size``, else the decoded length of ``data``);
- ``questionnaire-referenceResource`` (the resource type a Reference answer points to);
- ``questionnaire-unitOption``, ``questionnaire-unitValueSet`` and SDC ``minQuantity``/``maxQuantity``
  for quantities (units compared through :mod:`ucum`: incompatible units are an error).

Limits that are not values (a ``cqf-expression`` instead of a value) are not judged here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from fhir_exchange.fhir.fhirpath.ucum import compare_quantities
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.terminology import Expansion
from fhir_exchange.validation.values import compare

EXT = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"

# Answer value types whose limits ``minValue``/``maxValue`` order (values.compare type codes).
_ORDERED = {"valueInteger": "integer", "valueDecimal": "decimal", "valueDate": "date", "valueDateTime": "dateTime",
            "valueTime": "time"}
_STRINGS = ("valueString", "valueUri")

Expander = Callable[[str], Expansion | None]


def ext_values(item: dict[str, Any], url: str) -> list[Any]:
    """The values of the extensions ``url`` on ``item`` (None for one without a value)."""
    out = []
    for e in dicts(item.get("extension")):
        if e.get("url") == url:
            out.append(next((v for k, v in e.items() if k.startswith("value")), None))
    return out


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def label(value: Any) -> str:
    if isinstance(value, dict):
        if "code" in value:
            return f"{value.get('system')}#{value.get('code')}"
        if "reference" in value:
            return str(value["reference"])
        return str(value)
    return repr(value)


def decimals(value: Any) -> int:
    text = repr(value) if isinstance(value, float) else str(value)
    if "e" in text.lower():
        exponent = Decimal(text).as_tuple().exponent  # an int: NaN and Infinity have no "e"
        return abs(exponent) if isinstance(exponent, int) else 0
    return len(text.partition(".")[2])


def check_answer(key: str, value: Any, d: dict[str, Any], path: str, sink: IssueSink,
                 expand: Expander, contained: list[dict[str, Any]]) -> None:
    """Every constraint of item ``d`` on one answer ``value`` (held under ``key``, e.g. valueDecimal)."""
    link = d.get("linkId")
    type_code = _ORDERED.get(key)
    if type_code is not None:
        for ext, sign, word in (("minValue", -1, "less than the minimum"), ("maxValue", 1, "more than the maximum")):
            for limit in ext_values(d, EXT + ext):
                if limit is None:
                    continue
                if compare(type_code, value, limit) == sign:
                    sink.error("value", "qr-answer-range",
                               f"The answer {label(value)} to item '{link}' is {word} {limit}", path)
    if key == "valueDecimal":
        for places in ext_values(d, EXT + "maxDecimalPlaces"):
            if isinstance(places, int) and decimals(value) > places:
                sink.error("value", "qr-answer-decimals",
                           f"The answer {value} to item '{link}' has more than {places} decimal places", path)
    if key in _STRINGS and isinstance(value, str):
        _string(value, d, path, sink)
    elif key == "valueAttachment" and isinstance(value, dict):
        _attachment(value, d, path, sink)
    elif key == "valueReference" and isinstance(value, dict):
        _reference(value, d, path, sink, contained)
    elif key == "valueQuantity" and isinstance(value, dict):
        _quantity(value, d, path, sink, expand)


def _string(value: str, d: dict[str, Any], path: str, sink: IssueSink) -> None:
    link = d.get("linkId")
    for length in ext_values(d, EXT + "minLength"):
        if isinstance(length, int) and len(value) < length:
            sink.error("value", "qr-answer-length",
                       f"The answer to item '{link}' is shorter than {length} characters", path)
    max_length = d.get("maxLength")
    if isinstance(max_length, int) and len(value) > max_length:
        sink.error("value", "qr-answer-length",
                   f"The answer to item '{link}' is longer than {max_length} characters", path)
    for pattern in ext_values(d, EXT + "regex"):
        compiled = _regex(pattern) if isinstance(pattern, str) else None
        if compiled is not None and compiled.fullmatch(value) is None:
            sink.error("value", "qr-answer-regex",
                       f"The answer {value!r} to item '{link}' does not match the pattern {pattern}", path)


def _mime_ok(content_type: str, allowed: list[str]) -> bool:
    base = content_type.partition(";")[0].strip().lower()
    for a in allowed:
        a = a.partition(";")[0].strip().lower()
        if a == base or (a.endswith("/*") and base.startswith(a[:-1])) or a in ("*", "*/*"):
            return True
    return False


def _attachment(value: dict[str, Any], d: dict[str, Any], path: str, sink: IssueSink) -> None:
    link = d.get("linkId")
    allowed = [m for m in ext_values(d, EXT + "mimeType") if isinstance(m, str)]
    content_type = value.get("contentType")
    if allowed:
        if not isinstance(content_type, str):
            sink.error("value", "qr-attachment-type",
                       f"The attachment for item '{link}' has no contentType; allowed: {', '.join(allowed)}", path)
        elif not _mime_ok(content_type, allowed):
            sink.error("value", "qr-attachment-type",
                       f"The attachment type {content_type} is not allowed for item '{link}' "
                       f"(allowed: {', '.join(allowed)})", path)
    for limit in ext_values(d, EXT + "maxSize"):
        try:
            maximum = Decimal(str(limit))
        except InvalidOperation:
            continue
        size = _size(value)
        if size is not None and size > maximum:
            sink.error("value", "qr-attachment-size",
                       f"The attachment for item '{link}' is {size} bytes, more than the maximum {limit}", path)


def _size(value: dict[str, Any]) -> int | None:
    size = value.get("size")
    if type(size) is int:
        return size
    data = value.get("data")
    if isinstance(data, str):
        try:
            return len(base64.b64decode(data, validate=False))
        except (binascii.Error, ValueError):
            return None
    return None


def _reference(value: dict[str, Any], d: dict[str, Any], path: str, sink: IssueSink,
               contained: list[dict[str, Any]]) -> None:
    allowed = [t for t in ext_values(d, EXT + "questionnaire-referenceResource") if isinstance(t, str)]
    if not allowed:
        return
    target = reference_type(value, contained)
    if target is not None and target not in allowed and not ({"Resource", "Any"} & set(allowed)):
        sink.error("structure", MsgId.REFERENCE_TARGET_TYPE,
                   f"The reference {label(value)} for item '{d.get('linkId')}' is to a {target}; allowed: "
                   f"{', '.join(allowed)}", path)


_LITERAL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def reference_type(value: dict[str, Any], contained: list[dict[str, Any]]) -> str | None:
    """The resource type a Reference names (its ``type``, a literal URL, or a contained target)."""
    t = value.get("type")
    if isinstance(t, str) and "/" not in t:
        return t
    ref = value.get("reference")
    if not isinstance(ref, str):
        return None
    if ref.startswith("#"):
        hit = next((c for c in contained if c.get("id") == ref[1:]), None)
        rt = hit.get("resourceType") if hit else None
        return rt if isinstance(rt, str) else None
    m = _LITERAL.search(ref)
    return m.group(1) if m else None


def _quantity(q: dict[str, Any], d: dict[str, Any], path: str, sink: IssueSink, expand: Expander) -> None:
    options = [o for o in ext_values(d, EXT + "questionnaire-unitOption") if isinstance(o, dict)]
    if options and not any(o.get("system") == q.get("system") and o.get("code") == q.get("code") for o in options):
        sink.error("code-invalid", "qr-unit-option",
                   f"The unit {q.get('system')}#{q.get('code')} is not one of the allowed unit options", path)
    for vs in ext_values(d, EXT + "questionnaire-unitValueSet"):
        if not isinstance(vs, str):
            continue
        if not isinstance(q.get("code"), str):
            sink.error("code-invalid", "qr-unit-missing",
                       "The quantity has no unit code, but the item requires one from a value set", path)
            continue
        exp = expand(vs)
        if exp is not None and exp.contains(q.get("system"), q["code"]) is False:
            sink.error("code-invalid", MsgId.CODE_NOT_IN_VALUESET,
                       f"The unit {q.get('system')}#{q['code']} is not in the value set {vs}", path)
    for ext, sign, word in ((SDC + "sdc-questionnaire-minQuantity", -1, "less than"),
                            (SDC + "sdc-questionnaire-maxQuantity", 1, "greater than")):
        for limit in ext_values(d, ext):
            if not isinstance(limit, dict):
                continue
            try:
                a, b = Decimal(str(q.get("value"))), Decimal(str(limit.get("value")))
            except InvalidOperation:
                continue
            c = compare_quantities(a, str(q.get("code")), b, str(limit.get("code")))
            if c is None:
                sink.error("value", "qr-answer-units",
                           f"The quantity's unit {q.get('code')} cannot be compared with the limit's unit "
                           f"{limit.get('code')}", path)
            elif c == sign:
                sink.error("value", "qr-answer-range",
                           f"The quantity {q.get('value')} {q.get('code')} is {word} {limit.get('value')} "
                           f"{limit.get('code')}", path)
