"""``_text`` and ``_content`` (https://hl7.org/fhir/R4/search.html#text): string search over words.

The spec leaves the matching to the server. Here both are string parameters over *words*, with the
string parameters' normalisation and matching (:mod:`fhir_exchange.search.params.string`):

* ``_text`` indexes the narrative: ``text.div`` with comments and XHTML tags removed (block tags and
  ``<br/>`` separate words, inline tags such as ``<b>`` do not) and entities decoded.
* ``_content`` indexes every string value in the resource's JSON (string, markdown, code, and also
  dates and other primitives written as JSON strings) except ``resourceType``, ``id``, ``meta``,
  URIs under ``url``/``system``/``reference``, base64 ``data`` and the narrative ``div``; contained
  resources and extensions count as content.
* A word is a maximal run of letters, digits and combining marks (``\\w``), so "O'Brien" is the two
  words "O" and "Brien", and a Hangul syllable run stays one word. Each distinct word is one string
  value of the parameter: ``normalised`` for the default search, as written for ``:exact``.
* ``_text=pres`` matches a resource with a word starting with "pres" (case- and accent-insensitive,
  "Pressure" and "présent" alike); ``:contains`` matches a word containing the value; ``:exact`` a word
  equal to it as written. A value with several words (a space or punctuation) therefore matches
  nothing: search each word as its own parameter to AND them (``_text=blood&_text=pres``).
* ``_content`` keeps the first :data:`MAX_WORDS` distinct words of a resource (document order), so
  that an index row count stays bounded for large resources; words beyond it are not searchable.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params.string import collect_strings, normalize

MAX_WORDS = 2000

_WORD = re.compile(r"\w+")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
# Inline elements are part of a word ("<b>Hel</b>lo" is "Hello"); every other tag separates words.
_INLINE_TAG = re.compile(r"</?(?:a|b|i|u|s|em|strong|span|small|big|sub|sup|code|tt|font|abbr|cite|q)"
                         r"(?:\s[^>]*)?/?>", re.I)
_TAG = re.compile(r"<[^>]*>")
_CONTENT_SKIP = frozenset({"resourceType", "id", "meta", "url", "system", "reference", "data", "div"})


def narrative_text(div: str) -> str:
    """The plain text of an XHTML narrative ``div``."""
    s = _COMMENT.sub(" ", div)
    s = _INLINE_TAG.sub("", s)
    s = _TAG.sub(" ", s)
    return html.unescape(s)


def words(texts: Iterable[str], limit: int | None = None) -> list[tuple[str, str]]:
    """Distinct (normalised, as written) words of ``texts``, in order, at most ``limit``."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for t in texts:
        for m in _WORD.finditer(t):
            w = m.group()
            if w in seen:
                continue
            seen.add(w)
            n = normalize(w)
            if n:
                out.append((n, w))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def _entries(code: str, pairs: list[tuple[str, str]]) -> list[IndexEntry]:
    return [IndexEntry(code, "string", text=n, code=w) for n, w in pairs]


def text_entries(code: str, resource: dict[str, Any]) -> list[IndexEntry]:
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return []
    # One word can be written many ways; the cap bounds pathological narratives like _content.
    return _entries(code, words([narrative_text(div)], MAX_WORDS))


def _strings(node: Any, out: list[str]) -> None:
    collect_strings(node, out, _CONTENT_SKIP.__contains__)


def content_entries(code: str, resource: dict[str, Any]) -> list[IndexEntry]:
    found: list[str] = []
    _strings(resource, found)
    return _entries(code, words(found, MAX_WORDS))
