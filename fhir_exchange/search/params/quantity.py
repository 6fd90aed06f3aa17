"""quantity parameters (https://hl7.org/fhir/R4/search.html#quantity): ``[prefix]value|system|code``,
``value||code`` (the code or the unit text, any system) and ``value`` (any unit). The number part has
the semantics of :mod:`number` (implicit precision, prefixes); Quantity, Age, Duration, Money (system
urn:iso:std:iso:4217, code = currency) and Range are indexed.

UCUM units (search.html#quantity: "the server may choose to ... convert to a canonical unit"): a
quantity with system ``http://unitsofmeasure.org`` and a code the UCUM implementation reads
(:func:`fhir_exchange.fhir.fhirpath.ucum.canonical`, the one FHIRPath also uses) is indexed also in
canonical form: the dimension's key (equal for commensurable units) and the range in the canonical
unit, computed in decimals. A search ``5.4|http://unitsofmeasure.org|mg`` matches a quantity written
with that system and code as before, OR one whose canonical form has the same dimension and meets
the prefix on the canonical value (0.0054 g, 5400 ug). Searches without system and code, or with a
unit UCUM does not read, are unchanged. Units whose conversion is not a factor (Celsius, Fahrenheit,
logarithmic units) are not converted: 37 Cel is not 37 K.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.fhir.fhirpath.ucum import canonical
from fhir_exchange.search import prefix as algebra
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.params import number
from fhir_exchange.search.params._keys import all_of
from fhir_exchange.search.query import NUM_MAX, NUM_MIN, QuantityValue

TABLE = "search_quantity"
COLUMNS = ("low", "high", "system", "code", "text", "canon", "canon_low", "canon_high")
SORT_COLUMN = "low"
MODIFIERS = frozenset({"missing"})

UCUM = "http://unitsofmeasure.org"
# Atoms whose conversion has an offset or is logarithmic: value * factor would be wrong.
_NOT_A_FACTOR = ("Cel", "degF", "degRe", "pH", "Np", "B[", "dB", "diop", "%[slope]", "[hp", "bit_s")


def ucum_factor(system: Any, code: Any) -> tuple[str, Decimal] | None:
    """(dimension key, factor to the canonical unit) of a UCUM unit, or None."""
    if system != UCUM or not isinstance(code, str) or not code or any(a in code for a in _NOT_A_FACTOR):
        return None
    try:
        return canonical(code)
    except (ValueError, ArithmeticError):  # a unit the parser rejects late: not convertible
        return None


def _scaled(x: float, factor: Decimal) -> float:
    if x <= NUM_MIN or x >= NUM_MAX:
        return x  # an open end of a Range stays open
    return float(Decimal(repr(x)) * factor)  # repr: the decimal as written in the JSON


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
    conv = ucum_factor(system, ucode)
    try:
        scaled = None if conv is None else (_scaled(r[0], conv[1]), _scaled(r[1], conv[1]))
    except ArithmeticError:  # beyond the decimal context (10*999999): kept as written only
        scaled = None
    if conv is None or scaled is None:
        return [IndexEntry(code, "quantity", low=r[0], high=r[1], system=system, code=ucode, text=unit)]
    return [IndexEntry(code, "quantity", low=r[0], high=r[1], system=system, code=ucode, text=unit,
                       canon=conv[0], canon_low=scaled[0], canon_high=scaled[1])]


def parse_value(raw: str, modifier: str | None, name: str) -> QuantityValue:
    from fhir_exchange.search.params import split_escaped, unescape

    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise invalid(f"Invalid quantity '{raw}' for search parameter '{name}': expected "
                      "[prefix]value[|system|code]", name)
    prefix, d = number.parse_decimal(parts[0], name)
    num = number.value_of(prefix, d)
    if len(parts) == 1:
        return QuantityValue(num)
    system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
    conv = ucum_factor(system, code)
    try:
        canon = None if conv is None else number.value_of(prefix, d, conv[1])
    except ArithmeticError:  # beyond the decimal context (10*999999): compared as written only
        canon = None
    if conv is None or canon is None:
        return QuantityValue(num, system, code)
    return QuantityValue(num, system, code, conv[0], canon)


# The condition on a row is ``literal OR canonical``: the number on the value as written with the unit
# as written (what it always was, and all that rows indexed before canonical forms have), or the
# number on the canonical value within the same dimension.


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
    if v.canon_number is None:
        return cond, args
    ccond, cargs = algebra.sql(algebra.for_number(v.canon_number), f"{alias}.canon_low", f"{alias}.canon_high")
    return f"({cond}) OR ({alias}.canon = ? AND {ccond})", [*args, v.canon, *cargs]


def match(e: IndexEntry, v: QuantityValue, modifier: str | None) -> bool:
    if v.canon_number is not None and e.canon == v.canon and algebra.holds(
            algebra.for_number(v.canon_number), e.canon_low, e.canon_high):
        return True
    if not number.match(e, v.number, None):
        return False
    if v.system is not None:
        return e.system == v.system and (v.code is None or e.code == v.code)
    return v.code is None or e.code == v.code or e.text == v.code


# -- MongoDB: ``_s.qty`` holds ``{p, lo, hi, s, c, u}`` (system, code, unit) per value, and ``{cd, clo,
# chi}`` (the canonical form) for UCUM units; one ``$elemMatch`` per search value.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    doc = {"p": e.param, "lo": e.low, "hi": e.high, "s": e.system, "c": e.code, "u": e.text}
    if e.canon is not None:
        doc.update(cd=e.canon, clo=e.canon_low, chi=e.canon_high)
    return [("qty", doc)]


def mongo(v: QuantityValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    conds: list[dict[str, Any]] = [algebra.mongo(algebra.for_number(v.number))]
    if v.system is not None:
        conds.append({"s": v.system})
        if v.code is not None:
            conds.append({"c": v.code})
    elif v.code is not None:
        conds.append({"$or": [{"c": v.code}, {"u": v.code}]})
    literal = all_of(*conds)
    if v.canon_number is None:
        return {f"{at}qty": {"$elemMatch": all_of({"p": code}, literal)}}
    canon = all_of({"cd": v.canon}, algebra.mongo(algebra.for_number(v.canon_number), "clo", "chi"))
    return {f"{at}qty": {"$elemMatch": {"p": code, "$or": [literal, canon]}}}
