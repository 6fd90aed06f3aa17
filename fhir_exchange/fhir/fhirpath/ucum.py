"""A small UCUM subset for comparing quantities: https://ucum.org/ucum (as used by https://hl7.org/fhir/R4/datatypes.html#Quantity).

Enough to order two quantities of the same dimension written with different units (``10000 m``
against ``5 km``; ``1 h`` against ``30 min``): metric prefixes on the base units, plus the common
customary and time units. Anything else is "not comparable" (None), never a guess.
"""

from __future__ import annotations

from decimal import Decimal

PREFIXES = {
    "Y": Decimal("1e24"), "Z": Decimal("1e21"), "E": Decimal("1e18"), "P": Decimal("1e15"), "T": Decimal("1e12"),
    "G": Decimal("1e9"), "M": Decimal("1e6"), "k": Decimal("1e3"), "h": Decimal("1e2"), "da": Decimal("10"),
    "d": Decimal("1e-1"), "c": Decimal("1e-2"), "m": Decimal("1e-3"), "u": Decimal("1e-6"), "n": Decimal("1e-9"),
    "p": Decimal("1e-12"), "f": Decimal("1e-15"),
}
# base unit -> (dimension, factor to the dimension's canonical unit)
BASE = {
    "m": ("length", Decimal(1)),
    "g": ("mass", Decimal(1)),
    "L": ("volume", Decimal(1)),
    "l": ("volume", Decimal(1)),
    "s": ("time", Decimal(1)),
    "mol": ("amount", Decimal(1)),
    "Pa": ("pressure", Decimal(1)),
    "Cel": ("temperature-c", Decimal(1)),
}
SPECIAL = {
    "[mi_i]": ("length", Decimal("1609.344")),
    "[in_i]": ("length", Decimal("0.0254")),
    "[ft_i]": ("length", Decimal("0.3048")),
    "[yd_i]": ("length", Decimal("0.9144")),
    "[lb_av]": ("mass", Decimal("453.59237")),
    "[oz_av]": ("mass", Decimal("28.349523125")),
    "min": ("time", Decimal(60)),
    "h": ("time", Decimal(3600)),
    "d": ("time", Decimal(86400)),
    "wk": ("time", Decimal(604800)),
    "mo": ("time", Decimal("2629800")),
    "a": ("time", Decimal("31557600")),
    "mm[Hg]": ("pressure", Decimal("133.322")),
    "%": ("ratio", Decimal("0.01")),
    "1": ("ratio", Decimal(1)),
}


def canonical(code: str) -> tuple[str, Decimal] | None:
    """(dimension, factor) of a simple UCUM code, or None when beyond this subset."""
    if code in SPECIAL:
        return SPECIAL[code]
    if code in BASE:
        return BASE[code]
    for p in sorted(PREFIXES, key=len, reverse=True):
        if code.startswith(p) and code[len(p):] in BASE:
            dim, f = BASE[code[len(p):]]
            return dim, f * PREFIXES[p]
    return None


def compare_quantities(a_value: Decimal, a_code: str, b_value: Decimal, b_code: str) -> int | None:
    """-1/0/1 ordering of a against b; None when the units are not comparable."""
    if a_code == b_code:
        return (a_value > b_value) - (a_value < b_value)
    ca, cb = canonical(a_code), canonical(b_code)
    if ca is None or cb is None or ca[0] != cb[0]:
        return None
    x, y = a_value * ca[1], b_value * cb[1]
    return (x > y) - (x < y)
