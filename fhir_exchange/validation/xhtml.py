"""Narrative XHTML: https://hl7.org/fhir/R4/narrative.html#xhtml (invariants txt-1 and txt-2).

``Narrative.div`` must be well-formed XHTML (XML: HTML entities such as ``&nbsp;`` are not defined),
a ``div`` in the XHTML namespace at the root, using only the basic formatting elements and
attributes the specification lists — no scripts, forms, event handlers, processing instructions or
DOCTYPE — and must not be empty (some non-whitespace text or an image). The element and attribute
lists are those of the HL7 reference validator.
"""

from __future__ import annotations

import re
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
    fast = _simple_div(text)
    if fast is not None:
        _report(*fast, path, sink)
        return
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
        tag = el.tag
        name = _ALLOWED_TAGS.get(tag)  # the allowed elements, found without string work
        if name is None:
            tag = tag if isinstance(tag, str) else ""
            name = tag[len(XHTML):] if tag.startswith(XHTML) else tag
            if el is not root and name not in ELEMENTS:
                bad_elements.add(name)
        if name == "img":
            has_content = True
        for attr, value in el.items():  # items(), not attrib: no dict made for elements without any
            if attr in _PLAIN_ATTRIBUTES:
                continue
            local = attr.rsplit("}", 1)[-1]
            if attr == XML_LANG or attr == "{http://www.w3.org/1999/xlink}href":
                continue
            if _bad_attribute(name, local, value):
                bad_attrs.add(f"{name}/@{local}")
        if not has_content and ((el.text and el.text.strip()) or (el is not root and el.tail and el.tail.strip())):
            has_content = True
    _report(bad_elements, bad_attrs, has_content, path, sink)


_ALLOWED_TAGS = {XHTML + name: name for name in ELEMENTS}
# Allowed attributes whose value does not matter (href and src are checked for javascript:).
_PLAIN_ATTRIBUTES = frozenset(a for a in ATTRIBUTES if a not in ("href", "src") and not a.lower().startswith("on"))


def _bad_attribute(name: str, local: str, value: str) -> bool:
    scripted = local in ("href", "src") and value.strip().lower().startswith("javascript:")
    return local.lower().startswith("on") or local not in ATTRIBUTES or scripted


def _report(bad_elements: set[str], bad_attrs: set[str], has_content: bool, path: str, sink: IssueSink) -> None:
    for name in sorted(bad_elements):
        sink.error("value", MsgId.XHTML, f"Illegal element name in the narrative XHTML ('{name}')", path)
    for name in sorted(bad_attrs):
        sink.error("value", MsgId.XHTML, f"Illegal attribute in the narrative XHTML ('{name}')", path)
    if not has_content:
        sink.error("invariant", MsgId.INVARIANT,
                   "Constraint failed: txt-2: The narrative SHALL have some non-whitespace content", path)


# The narrative of text only — generated ones often are — is read without the XML parser (whose set-up
# alone costs more than the structural check of a small resource): one match decides it. Any markup,
# entity or character XML forbids goes to the parser (for tagged narratives it is the faster reader).
_PLAIN = re.compile('<div xmlns="http://www.w3.org/1999/xhtml">'
                    "([^<&\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]*)</div>").fullmatch
_NONE: set[str] = set()  # never modified: text has no bad names


def _simple_div(text: str) -> tuple[set[str], set[str], bool] | None:
    """(bad elements, bad attributes, has content) of a narrative of text only, else None."""
    plain = _PLAIN(text)
    if plain is None or "]]>" in text:
        return None
    return _NONE, _NONE, bool(plain.group(1).strip())


def check_narratives(resources: list[Visited], sink: IssueSink) -> None:
    for v in resources:
        text: Any = v.node.get("text")
        if isinstance(text, dict) and isinstance(div := text.get("div"), str):
            plain = _PLAIN(div.strip())
            if plain is not None and "]]>" not in div and plain.group(1).strip():
                continue  # text with content and nothing else: no issue to report, no path to build
            check_div(div, f"{v.path}.text.div", sink)


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
