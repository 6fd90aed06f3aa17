"""Narrative XHTML: https://hl7.org/fhir/R4/narrative.html#xhtml (invariants txt-1 and txt-2).

``Narrative.div`` must be well-formed XHTML (XML: HTML entities such as ``&nbsp;`` are not defined),
a ``div`` in the XHTML namespace at the root, using only the basic formatting elements and
attributes the specification lists — no scripts, forms, event handlers, processing instructions or
DOCTYPE — and must not be empty (some non-whitespace text or an image). The element and attribute
lists are those of the HL7 reference validator.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.structure import Visited

XHTML = "{http://www.w3.org/1999/xhtml}"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ELEMENTS = _words("""
a abbr acronym address area article b bdo big blockquote br caption center cite code col colgroup
dd del dfn div dl dt em figcaption figure font footer h1 h2 h3 h4 h5 h6 header hr i img ins kbd
label li map nav ol p pre q s samp section small span strike strong sub sup table tbody td tfoot th
thead tr tt u ul var
""")
ATTRIBUTES = _words("""
abbr accesskey align alt axis bgcolor border cellpadding cellspacing char charoff cite class color
colspan coords datetime dir face frame headers height href id lang name nowrap rowspan rules scope
shape size span src start style summary tabindex title type usemap valign value width
""")
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def check_div(div: str, path: str, sink: IssueSink) -> None:
    text = div.strip()
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        # Never handed to the XML parser: entity declarations are how expansion bombs are built.
        sink.error("value", MsgId.XHTML, "The narrative must not have a DOCTYPE or entity declarations", path)
        return
    if "<?" in text:
        sink.error("value", MsgId.XHTML, "The narrative must not contain processing instructions", path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        sink.error("value", MsgId.XHTML, f"The narrative is not well-formed XHTML: {e}", path)
        return
    if root.tag != XHTML + "div":
        sink.error("value", MsgId.XHTML,
                   "The root of the narrative must be a <div> in the XHTML namespace "
                   "(http://www.w3.org/1999/xhtml)", path)
        return
    bad_elements: set[str] = set()
    bad_attrs: set[str] = set()
    has_content = False
    for el in root.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        name = tag[len(XHTML):] if tag.startswith(XHTML) else tag
        if el is not root and name not in ELEMENTS:
            bad_elements.add(name)
        if name == "img":
            has_content = True
        for attr in el.attrib:
            local = attr.rsplit("}", 1)[-1]
            if attr == XML_LANG or attr == "{http://www.w3.org/1999/xlink}href":
                continue
            scripted = local in ("href", "src") and el.attrib[attr].strip().lower().startswith("javascript:")
            if local.lower().startswith("on") or local not in ATTRIBUTES or scripted:
                bad_attrs.add(f"{name}/@{local}")
        if (el.text and el.text.strip()) or (el is not root and el.tail and el.tail.strip()):
            has_content = True
    for name in sorted(bad_elements):
        sink.error("value", MsgId.XHTML, f"Illegal element name in the narrative XHTML ('{name}')", path)
    for name in sorted(bad_attrs):
        sink.error("value", MsgId.XHTML, f"Illegal attribute in the narrative XHTML ('{name}')", path)
    if not has_content:
        sink.error("invariant", MsgId.INVARIANT,
                   "Constraint failed: txt-2: The narrative SHALL have some non-whitespace content", path)


def check_narratives(resources: list[Visited], sink: IssueSink) -> None:
    for v in resources:
        text: Any = v.node.get("text")
        if isinstance(text, dict) and isinstance(text.get("div"), str):
            check_div(text["div"], f"{v.path}.text.div", sink)


def anchors(div: str) -> list[str]:
    """The ``id`` and ``a/@name`` values of a narrative (targets of ``#fragment`` links); empty when
    the narrative is not well-formed (reported by :func:`check_div`)."""
    text = div.strip()
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []
    out: list[str] = []
    for el in root.iter():
        for attr, value in el.attrib.items():
            local = attr.rsplit("}", 1)[-1]
            tag = el.tag if isinstance(el.tag, str) else ""
            if local == "id" or (local == "name" and tag.endswith("}a")):
                out.append(value)
    return out
