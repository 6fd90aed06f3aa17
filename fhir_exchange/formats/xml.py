"""FHIR XML in and out: https://hl7.org/fhir/R4/xml.html (and https://hl7.org/fhir/R4/json.html for the JSON side).

The server keeps resources as JSON; XML is a rendering of that JSON and is read back into it. XML does
not say which elements repeat or which primitives are numbers, and JSON does not say in which order the
elements come, so both directions are driven by the shapes the validator uses (validation/shapes.py),
which list a type's properties in the order of its base StructureDefinition: ``id``, ``meta``...,
``extension``, ``modifierExtension``, then the type's own elements, a choice element ``value[x]`` at its
place under the name with its type suffix (``valueQuantity``). The rules of xml.html:

- primitives are elements with a ``value`` attribute; their JSON ``_name`` companion (``id`` and
  ``extension``, arrays aligned with ``null``) becomes the element's ``id`` attribute and children;
- ``Element.id`` and ``Extension.url`` (representation ``xmlAttr``) are attributes, ``Resource.id`` an
  element; the resource type is the element's name, a nested resource (``contained``, ``Bundle.entry
  .resource``, ``Parameters.parameter.resource``) the single child of its property's element;
- the narrative ``div`` is XHTML in its own namespace, kept as its JSON string is written;
- decimals keep the text they were written with (``1.10`` stays ``1.10``, fhir/jsonio.py).

Parsing is hardened (lxml, no entity expansion, no DTD, no network, libxml2's depth and text-node
limits): a DOCTYPE or entity declaration is refused (code ``security``), malformed XML names its line
and column. JSON that XML cannot carry (an unknown property, a number where a string belongs) raises
:class:`XmlError` rather than being dropped silently.
"""

from __future__ import annotations

import html.entities
import re
import weakref
from typing import Any

import orjson
from lxml import etree

from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir import jsonio
from fhir_exchange.validation.shapes import PRIM, RESOURCE, Prop, Shape, ShapeBuilder

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_F = "{" + FHIR_NS + "}"
_DIV = "{" + XHTML_NS + "}div"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_NSMAP: Any = {None: FHIR_NS}  # FHIR as the default namespace: <Patient xmlns="http://hl7.org/fhir">

_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_NAMED_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")


class XmlError(ValueError):
    """XML that cannot be read (or JSON that cannot be written) as FHIR XML.

    ``code`` is the OperationOutcome issue code: ``structure``, ``security`` (DOCTYPE, entities) or
    ``too-costly`` (past the parser's limits)."""

    def __init__(self, message: str, code: str = "structure", line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.line = line
        self.column = column


# -- the hardened parser ------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # A parser per call: lxml parsers must not be shared between threads (big bodies parse in workers).
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True, collect_ids=False)


def parse(data: bytes | str) -> Any:
    """The root element of an XML document, parsed without DTDs, entities or network access.

    FHIR XML has no DTD (xml.html): a DOCTYPE or an entity declaration only ever serves entity-expansion
    or external-entity attacks, so it is refused before libxml2 sees it. huge_tree=False keeps libxml2's
    limits: 256 levels of nesting, 10 MB in one text node or attribute."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise XmlError("FHIR XML must not contain a DOCTYPE or entity declarations", code="security")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        message = (exc.msg or str(exc)).strip()
        costly = "depth" in message.lower() or "huge" in message.lower()
        where = f" at line {line}, column {column}" if line is not None else ""
        raise XmlError(f"The body is not well-formed XML{where}: {message}",
                       code="too-costly" if costly else "structure", line=line, column=column) from None
    except ValueError as exc:  # e.g. a str with an encoding declaration
        raise XmlError(f"The body is not well-formed XML: {exc}") from None
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # a UTF-16 body hides from the byte test
        raise XmlError("FHIR XML must not contain a DOCTYPE or entity declarations", code="security")
    return root


_SHAPES: weakref.WeakKeyDictionary[Definitions, ShapeBuilder] = weakref.WeakKeyDictionary()


def shapes_for(definitions: Definitions) -> ShapeBuilder:
    """One ShapeBuilder per Definitions (it follows their generation itself)."""
    shapes = _SHAPES.get(definitions)
    if shapes is None:
        shapes = _SHAPES[definitions] = ShapeBuilder(definitions)
    return shapes


def _is_attr(p: Prop) -> bool:
    rep = p.elem.raw.get("representation")
    return isinstance(rep, list) and "xmlAttr" in rep


# The position of each property in its shape (the definition's order), per shape: the writer visits only the
# properties an object has (an ElementDefinition's shape lists ~300, with every fixed[x] and pattern[x]).
_ORDER: dict[int, tuple[Shape, dict[str, int]]] = {}


def _order(shape: Shape) -> dict[str, int]:
    cached = _ORDER.get(id(shape))
    if cached is not None and cached[0] is shape:
        return cached[1]
    if len(_ORDER) > 50_000:  # shapes of earlier definitions' generations
        _ORDER.clear()
    order = {key: i for i, key in enumerate(shape.props)}
    _ORDER[id(shape)] = (shape, order)
    return order


def _local(tag: str) -> tuple[str | None, str]:
    """(namespace, local name) of an lxml tag, ``{ns}name``."""
    if tag[:1] == "{":
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


# -- XML → JSON -----------------------------------------------------------------------------------------


def to_json(data: bytes | str, shapes: ShapeBuilder, *, strict: bool = True) -> dict[str, Any]:
    """A FHIR XML document as the JSON resource it represents.

    ``strict`` (requests to the server) refuses what the JSON could not hold: unknown elements and
    attributes, text where FHIR has none, a non-repeating element twice. Lenient reading (definitions
    published as XML) skips such content, as the loader always has."""
    return XmlReader(shapes, strict).resource(parse(data), "")


class XmlReader:
    def __init__(self, shapes: ShapeBuilder, strict: bool) -> None:
        self.shapes = shapes
        self.strict = strict
        self.ext_shape = shapes.type_shape("Extension")

    def fail(self, message: str, el: Any) -> None:
        if self.strict:
            raise XmlError(f"{message} (line {el.sourceline})" if el.sourceline else message,
                           line=el.sourceline)

    def resource(self, el: Any, path: str) -> dict[str, Any]:
        qn = etree.QName(el)
        rt = qn.localname
        shape = self.shapes.resource_shape(rt) if qn.namespace == FHIR_NS else None
        if shape is None:
            where = f" at {path}" if path else ""
            raise XmlError(f"<{rt}> in namespace '{qn.namespace or ''}'{where} is not a FHIR resource "
                           f"(expected an element of {FHIR_NS} named after a resource type)", line=el.sourceline)
        out: dict[str, Any] = {"resourceType": rt}
        self.fill(el, shape, out, rt)
        return out

    def fill(self, el: Any, shape: Shape, out: dict[str, Any], path: str) -> None:
        for name, raw in el.attrib.items():
            if name.startswith("{"):
                continue  # xsi:schemaLocation and other namespaced attributes say nothing about the content
            p = shape.props.get(name)
            if p is not None and _is_attr(p):
                out[name] = raw
            else:
                self.fail(f"Unexpected attribute '{name}' on {path}", el)
        if el.text and el.text.strip():
            self.fail(f"Unexpected text in {path}", el)
        props = shape.props
        for child in el:
            if not isinstance(child.tag, str):
                continue
            namespace, name = _local(child.tag)
            p = props.get(name)
            if child.tail and child.tail.strip():
                self.fail(f"Unexpected text after {path}.{name}", child)
            if p is None or _is_attr(p) or (namespace != FHIR_NS and p.type_code != "xhtml"):
                self.fail(f"Unknown element '{name}' in {path}", child)
                continue
            here = f"{path}.{name}"
            companion: dict[str, Any] | None = None
            if p.type_code == "xhtml":
                if namespace != XHTML_NS:
                    self.fail(f"{here} must be an XHTML div (namespace {XHTML_NS})", child)
                value: Any = etree.tostring(child, encoding="unicode", with_tail=False)
            elif p.kind == PRIM:
                value, companion = self.primitive(child, p, here)
            elif p.kind == RESOURCE:
                inner = [c for c in child if isinstance(c.tag, str)]
                if len(inner) != 1:
                    self.fail(f"{here} must hold exactly one resource", child)
                value = self.resource(inner[0], here) if inner else {}
            else:
                value = {}
                self.fill(child, self.shapes.resolve(p), value, here)
            key = p.key
            if p.is_array:
                out.setdefault(key, []).append(value)
                if p.kind == PRIM:
                    comps = out.setdefault("_" + key, [])
                    comps.extend([None] * (len(out[key]) - 1 - len(comps)))
                    comps.append(companion)
                continue
            if key in out or "_" + key in out:
                self.fail(f"{here} appears more than once", child)
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

    def primitive(self, el: Any, p: Prop, path: str) -> tuple[Any, dict[str, Any] | None]:
        companion: dict[str, Any] = {}
        for name, raw in el.attrib.items():
            if name == "id":
                companion["id"] = raw
            elif name != "value" and not name.startswith("{"):
                self.fail(f"Unexpected attribute '{name}' on {path}", el)
        if el.text and el.text.strip():
            self.fail(f"Unexpected text in {path} (a primitive's value is its 'value' attribute)", el)
        extensions: list[Any] = []
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag == _F + "extension" and self.ext_shape is not None:
                ext: dict[str, Any] = {}
                self.fill(child, self.ext_shape, ext, f"{path}.extension")
                extensions.append(ext)
            else:
                self.fail(f"Unknown element '{_local(child.tag)[1]}' in {path}", child)
        if extensions:
            companion["extension"] = extensions
        raw_value = el.get("value")
        if raw_value is None and not extensions:  # ele-1; dropped silently, the validator could not see it
            self.fail(f"{path} has neither a value nor extensions", el)
        return (None if raw_value is None else _from_text(raw_value, p.type_code)), (companion or None)


def _from_text(raw: str, code: str) -> Any:
    """The JSON value of a primitive's ``value`` attribute: booleans and numbers become JSON's own;
    what is not one stays a string, for the validator to report in its words."""
    if code == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if code in _INTEGERS:
        return int(raw) if re.fullmatch(r"-?[0-9]+", raw) else raw
    if code == "decimal":
        if re.fullmatch(r"-?[0-9]+", raw):
            return int(raw)
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", raw):
            return raw
        value = float(raw)
        # As fhir/jsonio.py reads the same number from JSON: a float when it writes back as written.
        return value if orjson.dumps(value) == raw.encode() else jsonio.Decimal(raw)
    return raw


# -- JSON → XML -----------------------------------------------------------------------------------------


def to_xml(resource: dict[str, Any], shapes: ShapeBuilder, *, pretty: bool = False) -> bytes:
    """The FHIR XML document of a JSON resource, elements in the order of the base definitions."""
    root = XmlWriter(shapes).resource(None, resource, "")
    return _DECLARATION + bytes(etree.tostring(root, xml_declaration=False, encoding="UTF-8", pretty_print=pretty))


class XmlWriter:
    def __init__(self, shapes: ShapeBuilder) -> None:
        self.shapes = shapes
        ext_shape = shapes.type_shape("Extension")
        assert ext_shape is not None
        self.ext_shape = ext_shape

    def resource(self, parent: Any, res: Any, path: str) -> Any:
        rt = res.get("resourceType") if isinstance(res, dict) else None
        shape = self.shapes.resource_shape(rt) if isinstance(rt, str) else None
        if shape is None or not isinstance(rt, str):
            raise XmlError(f"{path or 'The body'} is not a resource of a known type: it has no XML form")
        el = (etree.Element(_F + rt, nsmap=_NSMAP) if parent is None
              else etree.SubElement(parent, _F + rt))
        self.fill(el, res, shape, rt, is_resource=True)
        return el

    def fill(self, el: Any, obj: Any, shape: Shape, path: str, is_resource: bool = False) -> None:
        if not isinstance(obj, dict):
            raise XmlError(f"{path} must be an object")
        props = shape.props
        order = _order(shape)
        present: set[str] = set()
        for k in obj:
            if k == "resourceType" and is_resource:
                continue
            base = k[1:] if k[:1] == "_" else k
            p = props.get(base)
            if p is None or (k[:1] == "_" and (p.kind != PRIM or _is_attr(p))):
                raise XmlError(f"Unknown property '{k}' in {path}: it has no XML form")
            present.add(base)
        for key in sorted(present, key=order.__getitem__):
            p = props[key]
            value = obj.get(key)
            comp = obj.get("_" + key) if p.kind == PRIM else None
            if value is None and comp is None:
                continue
            here = f"{path}.{key}"
            if _is_attr(p):
                el.set(key, _to_text(value, p.type_code, here))
            elif p.type_code == "xhtml":
                el.append(_xhtml(value, here))
            elif p.kind == PRIM:
                if p.is_array:
                    if not isinstance(value or [], list) or not isinstance(comp or [], list):
                        raise XmlError(f"{here} must be an array")
                    values, comps = value or [], comp or []
                    for i in range(max(len(values), len(comps))):
                        self.primitive(el, key, p, values[i] if i < len(values) else None,
                                       comps[i] if i < len(comps) else None, f"{here}[{i}]")
                else:
                    self.primitive(el, key, p, value, comp, here)
            else:
                for i, item in enumerate(_items(value, p, here)):
                    where = f"{here}[{i}]" if p.is_array else here
                    child = etree.SubElement(el, _F + key)
                    if p.kind == RESOURCE:
                        self.resource(child, item, where)
                    else:
                        self.fill(child, item, self.shapes.resolve(p), where)

    def primitive(self, el: Any, key: str, p: Prop, value: Any, comp: Any, path: str) -> None:
        if value is None and comp is None:
            raise XmlError(f"{path} is null without a '_{key}' companion")
        if isinstance(value, (list, dict)):
            raise XmlError(f"{path} must be a primitive value")
        child = etree.SubElement(el, _F + key)
        extensions: Any = []
        if comp is not None:
            if not isinstance(comp, dict) or set(comp) - {"id", "extension"}:
                raise XmlError(f"_{key} in {path} may hold only 'id' and 'extension'")
            if comp.get("id") is not None:
                child.set("id", _to_text(comp["id"], "string", f"{path}.id"))
            extensions = comp.get("extension") or []
            if not isinstance(extensions, list):
                raise XmlError(f"{path}.extension must be an array")
        if value is not None:
            child.set("value", _to_text(value, p.type_code, path))
        for i, ext in enumerate(extensions):
            self.fill(etree.SubElement(child, _F + "extension"), ext, self.ext_shape, f"{path}.extension[{i}]")


def _items(value: Any, p: Prop, path: str) -> list[Any]:
    if p.is_array:
        if not isinstance(value, list) or any(v is None for v in value):
            raise XmlError(f"{path} must be an array of objects")
        return value
    if isinstance(value, list):
        raise XmlError(f"{path} must not be an array")
    return [value]


def _to_text(value: Any, code: str, path: str) -> str:
    """A primitive's ``value`` attribute; the JSON type must be the one json.html gives the FHIR type, or
    the XML would come back as a different JSON value."""
    if code == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
    elif code in _INTEGERS:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif code == "decimal":
        if isinstance(value, jsonio.Decimal):
            return value.text
        if isinstance(value, float):
            return orjson.dumps(value).decode()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif isinstance(value, str):
        return value
    raise XmlError(f"{path}: {orjson.dumps(value, default=str).decode()[:60]} is not a JSON value of FHIR "
                   f"type {code}")


def _xhtml(value: Any, path: str) -> Any:
    """The narrative's XHTML div as an element (its JSON form is the XML text of the div)."""
    if not isinstance(value, str):
        raise XmlError(f"{path} must be a string of XHTML")
    try:
        div = parse(value)
    except XmlError as exc:
        if exc.code == "security" or "Entity" not in str(exc):
            raise XmlError(f"{path} is not well-formed XHTML: {exc}", code=exc.code) from None
        # HTML named entities (&nbsp;) are no XML; written as the characters they name, they read the same.
        div = parse(_NAMED_ENTITY.sub(_named_entity, value))
    if div.tag != _DIV:
        raise XmlError(f"{path} must be a <div> in the XHTML namespace ({XHTML_NS})")
    return div


def _named_entity(m: re.Match[str]) -> str:
    name = m.group(1)
    code = html.entities.name2codepoint.get(name)
    return m.group(0) if code is None or name in _XML_ENTITIES else f"&#{code};"
