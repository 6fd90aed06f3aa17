"""``htmlChecks()``: the FHIR narrative rules txt-1 and txt-2 for ``Narrative.div``.

Spec: https://hl7.org/fhir/R4/narrative.html#rules and https://hl7.org/fhir/R4/fhirpath.html
("htmlChecks: ... the html is well formed, contains only the allowed elements and attributes,
and has some non-whitespace content").

txt-1: only the basic formatting elements of HTML 4.0 chapters 7-11 (not 9.4, ins/del) and 15,
``<a>`` (name or href), images and inline ``style``; no head/body, scripts, forms, frames,
objects, external stylesheets or event attributes. txt-2: some non-whitespace content (text or an
image). The element and attribute lists are the ones HAPI's validator uses, which is what users
will compare us with.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

XHTML_NS = "http://www.w3.org/1999/xhtml"

ALLOWED_ELEMENTS = frozenset(
    {
        "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i",
        "strong", "small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite",
        "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt",
        "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th",
        "td", "code", "samp", "img", "map", "area",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "col", "area"})
_GLOBAL_ATTRIBUTES = frozenset(
    {"title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex", "xmlns"}
)
_TABLE_ATTRIBUTES = frozenset(
    {"span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope",
     "rowspan", "colspan", "border", "cellpadding", "cellspacing", "frame", "rules", "summary"}
)  # fmt: skip
_ELEMENT_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "name", "type", "hreflang", "rel", "rev", "charset", "shape", "coords"}),
    "img": frozenset({"src", "alt", "height", "width", "border", "usemap", "ismap", "longdesc", "align"}),
    "area": frozenset({"shape", "coords", "href", "nohref", "alt"}),
    "map": frozenset({"name"}),
    "blockquote": frozenset({"cite"}),
    "q": frozenset({"cite"}),
    "ol": frozenset({"start", "type", "compact"}),
    "ul": frozenset({"type", "compact"}),
    "li": frozenset({"value", "type"}),
    "pre": frozenset({"width"}),
    "p": frozenset({"align"}),
    "div": frozenset({"align"}),
    "h1": frozenset({"align"}), "h2": frozenset({"align"}), "h3": frozenset({"align"}),
    "h4": frozenset({"align"}), "h5": frozenset({"align"}), "h6": frozenset({"align"}),
    "hr": frozenset({"align", "noshade", "size", "width"}),
    "br": frozenset({"clear"}),
}  # fmt: skip
for _table_element in ("table", "caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td"):
    _ELEMENT_ATTRIBUTES[_table_element] = _TABLE_ATTRIBUTES | {"bgcolor", "nowrap", "height"}

_BAD_URL = re.compile(r"^\s*(javascript|vbscript|data:text/html)", re.IGNORECASE)
_BAD_STYLE = re.compile(r"url\s*\(|expression\s*\(|@import", re.IGNORECASE)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ok = True
        self.stack: list[str] = []
        self.seen_root = False
        self.has_content = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.seen_root:
            self.seen_root = True
            if tag != "div" or dict(attrs).get("xmlns") != XHTML_NS:
                self.ok = False
        elif not self.stack:
            self.ok = False  # a second root element
        if tag not in ALLOWED_ELEMENTS:
            self.ok = False
        allowed = _GLOBAL_ATTRIBUTES | _ELEMENT_ATTRIBUTES.get(tag, frozenset())
        for name, value in attrs:
            if (
                name not in allowed
                or name.startswith("on")
                or (name in ("href", "src", "cite", "longdesc") and value and _BAD_URL.match(value))
                or (name == "style" and value and _BAD_STYLE.search(value))
            ):
                self.ok = False
        if tag == "img":
            self.has_content = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.ok = False
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip():
            if not self.stack:
                self.ok = False  # text outside the div
            self.has_content = True

    def handle_pi(self, data: str) -> None:
        self.ok = False

    def handle_decl(self, decl: str) -> None:
        self.ok = False

    def unknown_decl(self, data: str) -> None:
        self.ok = False


def html_checks(div: str) -> bool:
    """True when ``div`` is a well-formed, safe FHIR narrative with some content."""
    checker = _Checker()
    try:
        checker.feed(div)
        checker.close()
    except (ValueError, AssertionError):
        return False
    return checker.ok and checker.seen_root and not checker.stack and checker.has_content
