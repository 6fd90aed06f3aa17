"""quantity parameters (https://hl7.org/fhir/R4/search.html#quantity): ``[prefix]value|system|code``,
``value||code`` (the code or the unit text, any system) and ``value`` (any unit). The number part has
the semantics of :mod:`number` (implicit precision, prefixes); Quantity, Age, Duration, Money (system
urn:iso:std:iso:4217, code = currency) and Range are indexed. No UCUM unit conversion: units must
match as written (Blaze and HAPI FHIR normalise UCUM; this server does not yet).
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params import number
from fhir_exchange.search.params._keys import all_of
from fhir_exchange.search.query import QuantityValue

TABLE = "search_quantity"
COLUMNS = ("low", "high", "system", "code", "text")
SORT_COLUMN = "low"
MODIFIERS = frozenset({"missing"})


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node, typ = item
    if not isinstance(node, dict):
        return []
    r = number.value_range(node)
    if r is None:
        return []
    # A Range takes its units from its bounds.
    unit_of = (node.get("low") or node.get("high") or {}) if ("low" in node or "high" in node) else node
    system, ucode, unit = unit_of.get("system"), unit_of.get("code"), unit_of.get("unit")
    if typ == "Money" or "currency" in unit_of:
        system, ucode = "urn:iso:std:iso:4217", unit_of.get("currency")
    return [IndexEntry(code, "quantity", low=r[0], high=r[1], system=system, code=ucode, text=unit)]


def parse_value(raw: str, modifier: str | None, name: str) -> QuantityValue:
    from fhir_exchange.search.params import split_escaped, unescape

    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise invalid(f"Invalid quantity '{raw}' for search parameter '{name}': expected "
                      "[prefix]value[|system|code]", name)
    num = number.parse_number(parts[0], name)
    if len(parts) == 1:
        return QuantityValue(num)
    system, code = unescape(parts[1]), unescape(parts[2])
    return QuantityValue(num, system or None, code or None)


def sql(v: QuantityValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    cond, args = number.sql(v.number, None, alias)
    if v.system is not None:
        cond += f" AND {alias}.system = ?"
        args.append(v.system)
        if v.code is not None:
            cond += f" AND {alias}.code = ?"
            args.append(v.code)
    elif v.code is not None:
        cond += f" AND ({alias}.code = ? OR {alias}.text = ?)"
        args.extend([v.code, v.code])
    return cond, args


def match(e: IndexEntry, v: QuantityValue, modifier: str | None) -> bool:
    if not number.match(e, v.number, None):
        return False
    if v.system is not None:
        return e.system == v.system and (v.code is None or e.code == v.code)
    return v.code is None or e.code == v.code or e.text == v.code


# -- MongoDB: ``_s.qty`` holds ``{p, lo, hi, s, c, u}`` (system, code, unit) per value; one
# ``$elemMatch`` per search value.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [("qty", {"p": e.param, "lo": e.low, "hi": e.high, "s": e.system, "c": e.code, "u": e.text})]


def mongo(v: QuantityValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    conds: list[dict[str, Any]] = [{"p": code}, number.mongo_range(v.number)]
    if v.system is not None:
        conds.append({"s": v.system})
        if v.code is not None:
            conds.append({"c": v.code})
    elif v.code is not None:
        conds.append({"$or": [{"c": v.code}, {"u": v.code}]})
    return {f"{at}qty": {"$elemMatch": all_of(*conds)}}
