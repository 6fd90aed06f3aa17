"""FHIR XML → JSON: https://hl7.org/fhir/R4/xml.html and https://hl7.org/fhir/R4/json.html.

The server speaks JSON; this converter exists so definitions published as XML (validator test
profiles, some IGs) can be loaded. XML does not say which elements repeat or which primitives are
numbers, so the conversion is driven by the same shapes the validator uses: arrays where the base
cardinality repeats, JSON booleans and numbers for boolean/integer/decimal, ``id`` attributes and
extensions of primitives moved to the ``_name`` companion, the narrative ``div`` kept as XHTML text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

from fhir_exchange.validation.shapes import PRIM, RESOURCE, Shape, ShapeBuilder

FHIR_NS = "{http://hl7.org/fhir}"
XHTML_NS = "http://www.w3.org/1999/xhtml"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml_resource(text: str | bytes, shapes: ShapeBuilder) -> dict[str, Any]:
    head = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if "<!DOCTYPE" in head.upper() or "<!ENTITY" in head.upper():
        # FHIR XML has no DTD (xml.html); declarations are only ever used for entity expansion attacks.
        raise ValueError("FHIR XML must not contain a DOCTYPE or entity declarations")
    root = ET.fromstring(text)
    return _resource(root, shapes)


def _resource(elem: ET.Element, shapes: ShapeBuilder) -> dict[str, Any]:
    rt = _local(elem.tag)
    shape = shapes.resource_shape(rt)
    out: dict[str, Any] = {"resourceType": rt}
    if shape is None:
        return out
    _fill(elem, shape, out, shapes)
    return out


def _primitive(raw: str | None, code: str) -> Any:
    if raw is None:
        return None
    if code == "boolean":
        return raw == "true" if raw in ("true", "false") else raw
    if code in ("integer", "positiveInt", "unsignedInt"):
        try:
            return int(raw)
        except ValueError:
            return raw
    if code == "decimal":
        try:
            d = Decimal(raw)
        except ArithmeticError:
            return raw
        return int(d) if d == d.to_integral_value() and "." not in raw and "e" not in raw.lower() else float(d)
    return raw


def _fill(elem: ET.Element, shape: Shape, out: dict[str, Any], shapes: ShapeBuilder) -> None:
    if elem.get("id") is not None and "id" in shape.props:
        out["id"] = elem.get("id")
    if elem.get("url") is not None and "url" in shape.props:
        out["url"] = elem.get("url")
    for child in elem:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions
        name = _local(child.tag)
        p = shape.props.get(name)
        if p is None:
            continue
        if p.type_code == "xhtml":
            value: Any = ET.tostring(child, encoding="unicode").replace(' xmlns:html="' + XHTML_NS + '"', "")
            value = value.replace("html:", "")
            companion: dict[str, Any] | None = None
        elif p.kind == PRIM:
            assert p.prim is not None
            value = _primitive(child.get("value"), p.prim.code)
            companion = {}
            if child.get("id") is not None:
                companion["id"] = child.get("id")
            ext_shape = shapes.type_shape("Element")
            if ext_shape is not None:
                _fill_extensions(child, ext_shape, companion, shapes)
            companion = companion or None
        elif p.kind == RESOURCE:
            inner = next((c for c in child if isinstance(c.tag, str)), None)
            value = _resource(inner, shapes) if inner is not None else {}
            companion = None
        else:
            value = {}
            _fill(child, shapes.resolve(p), value, shapes)
            companion = None
        key = p.key
        if p.is_array:
            out.setdefault(key, []).append(value)
            if p.kind == PRIM:
                comps = out.setdefault("_" + key, [])
                comps.extend([None] * (len(out[key]) - 1 - len(comps)))
                comps.append(companion)
        else:
            if value is not None:
                out[key] = value
            if companion:
                out["_" + key] = companion
    for k in [k for k in out if k.startswith("_")]:
        if isinstance(out[k], list):
            if all(c is None for c in out[k]):
                del out[k]
            else:
                out[k].extend([None] * (len(out[k[1:]]) - len(out[k])))


def _fill_extensions(elem: ET.Element, shape: Shape, out: dict[str, Any], shapes: ShapeBuilder) -> None:
    sub: dict[str, Any] = {}
    _fill(elem, shape, sub, shapes)
    if "extension" in sub:
        out["extension"] = sub["extension"]
