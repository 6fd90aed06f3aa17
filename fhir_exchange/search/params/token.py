"""token parameters (https://hl7.org/fhir/R4/search.html#token): ``[system]|[code]``, ``|code`` (no
system), ``system|`` (any code), ``code`` (any system); Coding, CodeableConcept, Identifier,
ContactPoint, code, boolean and string values. ``:text`` matches Coding.display / CodeableConcept.text
/ Identifier.type.text by normalised prefix (as a string search would); ``:not`` is "no value
matches" (a resource without the element matches too, as in HAPI FHIR); ``:of-type`` matches an
Identifier's type ``system|code|value``. ``:in``/``:not-in``/``:above``/``:below`` are expanded by the
parser from local terminology into plain values, so stores only see ``system|code`` sets.
Codes compare case-sensitively (HAPI FHIR does the same by default).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params._keys import mkey, prefix_range
from fhir_exchange.search.params.string import normalize
from fhir_exchange.search.query import TokenValue

TABLE = "search_token"
COLUMNS = ("system", "code", "text")
SORT_COLUMN = "code"
MODIFIERS = frozenset({"missing", "text", "not", "in", "not-in", "above", "below", "of-type"})
OF_TYPE = "|of-type"  # suffix of the parameter code under which Identifier type|value rows are kept


def _coding(code: str, c: Any, out: list[IndexEntry]) -> None:
    if not isinstance(c, dict):
        return
    system, value, display = c.get("system"), c.get("code"), c.get("display")
    if value is None and system is None and not display:
        return
    out.append(IndexEntry(code, "token", system=system, code=None if value is None else str(value),
                          text=normalize(display) if isinstance(display, str) else None))


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, typ = item
    out: list[IndexEntry] = []
    if isinstance(node, bool):
        out.append(IndexEntry(code, "token", code="true" if node else "false"))
    elif isinstance(node, str | int | float):
        out.append(IndexEntry(code, "token", code=str(node)))
    elif isinstance(node, dict):
        if typ == "CodeableConcept" or "coding" in node or (typ is None and set(node) <= {"text", "extension"}):
            for c in node.get("coding") or ():
                _coding(code, c, out)
            if isinstance(node.get("text"), str):
                out.append(IndexEntry(code, "token", text=normalize(node["text"])))
        elif typ in ("Identifier", "ContactPoint") or ("value" in node and "code" not in node):
            value = node.get("value")
            ttype: dict[str, Any] = node["type"] if isinstance(node.get("type"), dict) else {}
            ttext = ttype.get("text")
            out.append(IndexEntry(code, "token", system=node.get("system"),
                                  code=None if value is None else str(value),
                                  text=normalize(ttext) if isinstance(ttext, str) else None))
            if value is not None:
                for c in ttype.get("coding") or ():
                    if isinstance(c, dict) and c.get("code"):
                        out.append(IndexEntry(code + OF_TYPE, "token", system=f"{c.get('system') or ''}|{c['code']}",
                                              code=str(value)))
        elif typ in ("Coding", "Quantity", None) and ("code" in node or "system" in node or "display" in node):
            _coding(code, node, out)
    return out


def parse_value(raw: str, modifier: str | None, name: str) -> TokenValue:
    from fhir_exchange.search.params import split_escaped, unescape

    if modifier == "text":
        if not raw:
            raise invalid(f"Empty value for search parameter '{name}'", name)
        return TokenValue(text=normalize(unescape(raw)))
    if modifier == "of-type":
        parts = split_escaped(raw, "|")
        if len(parts) != 3 or not all(parts):
            raise invalid(f"Search parameter '{name}' with :of-type needs 'system|code|value', got '{raw}'", name)
        return TokenValue(system=f"{unescape(parts[0])}|{unescape(parts[1])}", code=unescape(parts[2]))
    parts = split_escaped(raw, "|")
    if len(parts) > 2:
        raise invalid(f"Malformed token '{raw}' for search parameter '{name}': more than one '|'", name)
    if len(parts) == 1:
        if not parts[0]:
            raise invalid(f"Empty value for search parameter '{name}'", name)
        return TokenValue(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise invalid(f"Malformed token '|' for search parameter '{name}'", name)
    return TokenValue(system, code or None)


def sql(value: TokenValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    if value.text is not None:
        return f"{alias}.text >= ? AND {alias}.text < ?", [value.text, value.text + "\U0010ffff"]
    conds: list[str] = []
    args: list[Any] = []
    if value.code is not None:
        conds.append(f"{alias}.code = ?")
        args.append(value.code)
    if value.system == "":
        conds.append(f"{alias}.system IS NULL")
    elif value.system is not None:
        conds.append(f"{alias}.system = ?")
        args.append(value.system)
    return " AND ".join(conds), args


def match(e: IndexEntry, value: TokenValue, modifier: str | None) -> bool:
    if value.text is not None:
        return (e.text or "").startswith(value.text) if e.text is not None else False
    if value.code is not None and e.code != value.code:
        return False
    if value.system == "":
        return e.system is None
    return value.system is None or e.system == value.system


# -- MongoDB: ``_s.tok`` p|system|code, ``_s.tokc`` p|code (any system), ``_s.tokn`` p|code (no
# system), ``_s.toks`` p|system (any code), ``_s.tokt`` p|text (:text prefix). Each query value is
# one equality (or one prefix range) on one indexed array.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    p = e.param
    out: list[tuple[str, Any]] = []
    if e.code is not None:
        out.append(("tokc", mkey(p, e.code)))
        out.append(("tokn", mkey(p, e.code)) if e.system is None else ("tok", mkey(p, e.system, e.code)))
    if e.system is not None:
        out.append(("toks", mkey(p, e.system)))
    if e.text is not None:
        out.append(("tokt", mkey(p, e.text)))
    return out


def mongo(value: TokenValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    if value.text is not None:
        return {f"{at}tokt": prefix_range(mkey(code, value.text))}
    if value.code is None:
        if value.system is None:  # any value of the parameter
            return {f"{at}has": code}
        if value.system == "":  # no system, any code (not produced by the parser)
            return {f"{at}tokn": prefix_range(mkey(code, ""))}
        return {f"{at}toks": mkey(code, value.system)}
    if value.system is None:
        return {f"{at}tokc": mkey(code, value.code)}
    if value.system == "":
        return {f"{at}tokn": mkey(code, value.code)}
    return {f"{at}tok": mkey(code, value.system, value.code)}
