"""string parameters (https://hl7.org/fhir/R4/search.html#string): case- and accent-insensitive
prefix match by default, ``:exact`` (exact, case-sensitive) and ``:contains`` (anywhere).

Normalisation: casefold, then, for characters that are not Hangul or CJK, Unicode NFKD with the
combining marks (category Mn) dropped, so "muller" finds "Müller" and "Sø" folds to "so". Hangul
syllables are kept whole: NFKD would split them into jamo, so that "김" would prefix-match "기"
(HAPI FHIR and Blaze also keep non-Latin scripts intact).
HumanName indexes family/given/prefix/suffix/text, Address its text parts, as the spec's table says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params._keys import mkey, prefix_range
from fhir_exchange.search.query import StringValue

TABLE = "search_string"
COLUMNS = ("text", "code")
SORT_COLUMN = "text"
MODIFIERS = frozenset({"exact", "contains", "missing"})
# Modes only ``_filter`` produces (search_filter.html ``eq``, ``ew``; not accepted as URL modifiers): the
# normalised text equal to / ending with the value.
FILTER_MODES = frozenset({"eq", "ew"})

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")
_SKIP_KEYS = frozenset({"extension", "modifierExtension", "id", "use", "system", "url", "period"})


def _keep_whole(ch: str) -> bool:
    o = ord(ch)
    return (0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F  # Hangul
            or 0x3040 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF)  # kana, CJK ideographs


def normalize(s: str) -> str:
    if s.isascii():
        return " ".join(s.lower().split())
    # Fold, strip, fold again: compatibility forms (math letters) only become foldable after NFKD,
    # and folding can bring marks back ("İ" -> "i" + dot above); the second pass makes it idempotent.
    return " ".join(unicodedata.normalize("NFC", _strip(_strip(s.casefold()).casefold())).split())


def _strip(s: str) -> str:
    out: list[str] = []
    for ch in s:
        if _keep_whole(ch):
            out.append(ch)
            continue
        for d in unicodedata.normalize("NFKD", ch):
            if unicodedata.category(d) != "Mn":
                out.append(d)
    return "".join(out)


def collect_strings(node: Any, out: list[str], skip: Callable[[str], bool]) -> None:
    """Every string value below ``node``, not descending into members whose key ``skip`` refuses."""
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, list):
        for x in node:
            collect_strings(x, out, skip)
    elif isinstance(node, dict):
        for k, v in node.items():
            if not skip(k):
                collect_strings(v, out, skip)


def _skip_key(key: str) -> bool:
    return key in _SKIP_KEYS or key.startswith("_")


def _strings(node: Any, out: list[str]) -> None:
    collect_strings(node, out, _skip_key)


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, typ = item
    found: list[str] = []
    if isinstance(node, str):
        found.append(node)
    elif isinstance(node, dict):
        if typ == "HumanName" or "family" in node or "given" in node:
            parts: tuple[str, ...] = _NAME_PARTS
        elif typ == "Address" or any(k in node for k in ("line", "city", "postalCode", "country")):
            parts = _ADDRESS_PARTS
        else:
            parts = ()
        if parts:
            for p in parts:
                _strings(node.get(p), found)
        else:
            _strings(node, found)
    out: list[IndexEntry] = []
    seen: set[str] = set()
    for s in found:
        if s and s not in seen:
            seen.add(s)
            out.append(IndexEntry(code, "string", text=normalize(s), code=s))
    return out


def parse_value(raw: str, modifier: str | None, name: str) -> StringValue:
    if raw == "":
        raise invalid(f"Empty value for search parameter '{name}'", name)
    return StringValue(normalize(raw), raw)


_HIGH = "\U0010ffff"


def sql(value: StringValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    if modifier == "exact":
        return f"{alias}.code = ?", [value.raw]
    if modifier == "contains":
        return f"instr({alias}.text, ?) > 0", [value.text]
    if modifier == "eq":
        return f"{alias}.text = ?", [value.text]
    if modifier == "ew":  # substr counts characters from the end; a shorter text cannot be equal
        return f"substr({alias}.text, ?) = ?", [-len(value.text), value.text]
    # Prefix as a range, so the (param, text) index serves it.
    return f"{alias}.text >= ? AND {alias}.text < ?", [value.text, value.text + _HIGH]


def match(e: IndexEntry, value: StringValue, modifier: str | None) -> bool:
    if modifier == "exact":
        return e.code == value.raw
    text = e.text or ""
    if modifier == "contains":
        return value.text in text
    if modifier == "eq":
        return text == value.text
    if modifier == "ew":
        return text.endswith(value.text)
    return text.startswith(value.text)


# -- MongoDB: ``_s.str`` p|normalised text (prefix as a range on the index, :contains as an anchored
# regex), ``_s.strx`` p|text as written (:exact, equality).


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if e.text is not None:
        out.append(("str", mkey(e.param, e.text)))
    if e.code is not None:
        out.append(("strx", mkey(e.param, e.code)))
    return out


def mongo(value: StringValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    if modifier == "exact":
        return {f"{at}strx": mkey(code, value.raw)}
    if modifier == "contains":
        return {f"{at}str": {"$regex": "^" + re.escape(mkey(code, "")) + r"[\s\S]*" + re.escape(value.text)}}
    if modifier == "eq":
        return {f"{at}str": mkey(code, value.text)}
    if modifier == "ew":  # normalised text never ends in a newline: "$" is its end
        return {f"{at}str": {"$regex": "^" + re.escape(mkey(code, "")) + r"[\s\S]*" + re.escape(value.text) + "$"}}
    return {f"{at}str": prefix_range(mkey(code, value.text))}
