"""UCUM, the Unified Code for Units of Measure: https://ucum.org/ucum (the unit system of FHIR
quantities, https://hl7.org/fhir/R4/datatypes.html#Quantity). The server's one UCUM implementation.

A recursive-descent parser of UCUM expressions (``mg/dL``, ``mmol/L``, ``10*3/uL``, ``[in_i]``,
``kg.m-2``, annotations ``{cells}``) over the metric prefixes and the base, derived and common
customary atoms, reducing a unit to a factor and a vector of base dimensions (:func:`parse_unit`).
Units it cannot read are "unknown" (None), never a guess; special units with an offset (``Cel``,
``[degF]``) are their own dimension, so they only compare with themselves.

Two small functions serve the rest of the server: :func:`canonical` and :func:`compare_quantities`.
FHIRPath's quantities (:mod:`fhir_exchange.fhir.fhirpath.quantity`) use :func:`parse_unit` directly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

_PREFIXES: dict[str, Decimal] = {
    "Y": Decimal("1e24"), "Z": Decimal("1e21"), "E": Decimal("1e18"), "P": Decimal("1e15"),
    "T": Decimal("1e12"), "G": Decimal("1e9"), "M": Decimal("1e6"), "k": Decimal("1e3"),
    "h": Decimal("1e2"), "da": Decimal("1e1"), "d": Decimal("1e-1"), "c": Decimal("1e-2"),
    "m": Decimal("1e-3"), "u": Decimal("1e-6"), "n": Decimal("1e-9"), "p": Decimal("1e-12"),
    "f": Decimal("1e-15"), "a": Decimal("1e-18"), "z": Decimal("1e-21"), "y": Decimal("1e-24"),
}  # fmt: skip

# Dimension vector: length, mass, time, amount, temperature, charge, luminosity, angle,
# then "arbitrary" dimensions that only compare with themselves.
_DIMS = ("m", "g", "s", "mol", "K", "C", "cd", "rad", "[iU]", "{cal_year}", "[arb]", "Cel", "[degF]")
Dimensions = tuple[int, ...]
UnitDef = tuple[Decimal, Dimensions]


def _dim(**powers: int) -> Dimensions:
    return tuple(powers.get(name.strip("[]{}"), 0) for name in _DIMS)


_ONE: Dimensions = _dim()
# atom -> (factor relative to the base units, dimensions, metric i.e. accepts prefixes)
_ATOMS: dict[str, tuple[Decimal, Dimensions, bool]] = {
    "m": (Decimal(1), _dim(m=1), True),
    "g": (Decimal(1), _dim(g=1), True),
    "s": (Decimal(1), _dim(s=1), True),
    "mol": (Decimal(1), _dim(mol=1), True),
    "K": (Decimal(1), _dim(K=1), True),
    "C": (Decimal(1), _dim(C=1), True),
    "cd": (Decimal(1), _dim(cd=1), True),
    "rad": (Decimal(1), _dim(rad=1), True),
    "sr": (Decimal(1), _dim(rad=2), True),
    "L": (Decimal("1e-3"), _dim(m=3), True),
    "l": (Decimal("1e-3"), _dim(m=3), True),
    "t": (Decimal("1e6"), _dim(g=1), True),
    "Hz": (Decimal(1), _dim(s=-1), True),
    "N": (Decimal(1000), _dim(m=1, g=1, s=-2), True),
    "Pa": (Decimal(1000), _dim(m=-1, g=1, s=-2), True),
    "J": (Decimal(1000), _dim(m=2, g=1, s=-2), True),
    "W": (Decimal(1000), _dim(m=2, g=1, s=-3), True),
    "A": (Decimal(1), _dim(C=1, s=-1), True),
    "V": (Decimal(1000), _dim(m=2, g=1, s=-2, C=-1), True),
    "Ohm": (Decimal(1000), _dim(m=2, g=1, s=-1, C=-2), True),
    "S": (Decimal("0.001"), _dim(m=-2, g=-1, s=1, C=2), True),
    "F": (Decimal("0.001"), _dim(m=-2, g=-1, s=2, C=2), True),
    "Wb": (Decimal(1000), _dim(m=2, g=1, s=-1, C=-1), True),
    "T": (Decimal(1000), _dim(g=1, s=-1, C=-1), True),
    "H": (Decimal(1000), _dim(m=2, g=1, C=-2), True),
    "lm": (Decimal(1), _dim(cd=1, rad=2), True),
    "lx": (Decimal(1), _dim(cd=1, rad=2, m=-2), True),
    "Bq": (Decimal(1), _dim(s=-1), True),
    "Gy": (Decimal(1), _dim(m=2, s=-2), True),
    "Sv": (Decimal(1), _dim(m=2, s=-2), True),
    "eq": (Decimal(1), _dim(mol=1), True),
    "osm": (Decimal(1), _dim(mol=1), True),
    "kat": (Decimal(1), _dim(mol=1, s=-1), True),
    "U": (Decimal(1) / Decimal(60_000_000), _dim(mol=1, s=-1), True),
    "bar": (Decimal("1e8"), _dim(m=-1, g=1, s=-2), True),
    "cal": (Decimal("4184"), _dim(m=2, g=1, s=-2), True),
    "atm": (Decimal("101325000"), _dim(m=-1, g=1, s=-2), False),
    "m[Hg]": (Decimal("133322000"), _dim(m=-1, g=1, s=-2), True),
    "m[H2O]": (Decimal("9806650"), _dim(m=-1, g=1, s=-2), True),
    "min": (Decimal(60), _dim(s=1), False),
    "h": (Decimal(3600), _dim(s=1), False),
    "d": (Decimal(86400), _dim(s=1), False),
    "wk": (Decimal(604800), _dim(s=1), False),
    "a": (Decimal("31557600"), _dim(s=1), False),
    "mo": (Decimal("2629800"), _dim(s=1), False),
    "%": (Decimal("0.01"), _ONE, False),
    "[ppm]": (Decimal("1e-6"), _ONE, False),
    "[ppb]": (Decimal("1e-9"), _ONE, False),
    "[lb_av]": (Decimal("453.59237"), _dim(g=1), False),
    "[oz_av]": (Decimal("28.349523125"), _dim(g=1), False),
    "[gr]": (Decimal("0.06479891"), _dim(g=1), False),
    "[in_i]": (Decimal("0.0254"), _dim(m=1), False),
    "[ft_i]": (Decimal("0.3048"), _dim(m=1), False),
    "[yd_i]": (Decimal("0.9144"), _dim(m=1), False),
    "[mi_i]": (Decimal("1609.344"), _dim(m=1), False),
    "[gal_us]": (Decimal("0.003785411784"), _dim(m=3), False),
    "[qt_us]": (Decimal("0.000946352946"), _dim(m=3), False),
    "[pt_us]": (Decimal("0.000473176473"), _dim(m=3), False),
    "[foz_us]": (Decimal("0.0000295735295625"), _dim(m=3), False),
    "[drp]": (Decimal("0.00000005"), _dim(m=3), False),
    "deg": (Decimal("0.0174532925199432957692369"), _dim(rad=1), False),
    "[iU]": (Decimal(1), _dim(iU=1), True),
    "[IU]": (Decimal(1), _dim(iU=1), True),
    "[arb'U]": (Decimal(1), _dim(arb=1), False),
    "Cel": (Decimal(1), _dim(Cel=1), False),
    "[degF]": (Decimal(1), _dim(degF=1), False),
    "{cal_year}": (Decimal(12), _dim(cal_year=1), False),
    "{cal_month}": (Decimal(1), _dim(cal_year=1), False),
}


@lru_cache(maxsize=1024)
def parse_unit(unit: str) -> UnitDef | None:
    """Factor and dimensions of a UCUM unit expression, or None when we cannot read it.

    Also reads FHIRPath's private ``{cal_year}``/``{cal_month}`` (calendar durations, which no
    UCUM unit equals); :func:`canonical` keeps them out of plain UCUM use.
    """
    try:
        parser = _UcumParser(unit)
        result = parser.term()
        if parser.pos != len(unit):
            return None
        return result
    except (ValueError, IndexError, InvalidOperation):
        return None


class _UcumParser:
    """Recursive descent over the UCUM grammar: term := component (('.'|'/') component)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def term(self) -> UnitDef:
        factor, dims = Decimal(1), _ONE
        op = "."
        if self._peek() == "/":
            self.pos += 1
            op = "/"
        while True:
            f, d = self.component()
            if op == ".":
                factor, dims = factor * f, tuple(a + b for a, b in zip(dims, d, strict=True))
            else:
                factor, dims = factor / f, tuple(a - b for a, b in zip(dims, d, strict=True))
            nxt = self._peek()
            if nxt not in (".", "/"):
                return factor, dims
            op = nxt
            self.pos += 1

    def component(self) -> UnitDef:
        if self._peek() == "(":
            self.pos += 1
            result = self.term()
            if self._peek() != ")":
                raise ValueError("unbalanced parenthesis")
            self.pos += 1
            return result
        start = self.pos
        depth = 0
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            elif depth == 0 and ch in "./()":
                break
            self.pos += 1
        if self.pos == start:  # "mg/", "m..s", "()": not a unit
            raise ValueError("empty component")
        return _component_value(self.text[start : self.pos])

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""


def _component_value(text: str) -> UnitDef:
    text = re.sub(r"\{[^}]*\}", "", text) if not text.startswith("{cal_") else text
    if text == "":
        return Decimal(1), _ONE
    if text.isdigit():
        return Decimal(text), _ONE
    m = re.fullmatch(r"10[*^]([+-]?\d+)", text)
    if m:
        return Decimal(10) ** int(m.group(1)), _ONE
    m = re.fullmatch(r"(.*?[^\d+-])([+-]?\d+)?", text)
    if not m:
        raise ValueError(text)
    atom, exponent = m.group(1), int(m.group(2) or 1)
    factor, dims = _atom_value(atom)
    return factor**exponent, tuple(d * exponent for d in dims)


def _atom_value(atom: str) -> UnitDef:
    if atom in _ATOMS:
        factor, dims, _ = _ATOMS[atom]
        return factor, dims
    for prefix in ("da", *(p for p in _PREFIXES if len(p) == 1)):
        if atom.startswith(prefix) and atom[len(prefix) :] in _ATOMS:
            factor, dims, metric = _ATOMS[atom[len(prefix) :]]
            if metric:
                return _PREFIXES[prefix] * factor, dims
    raise ValueError(f"unknown unit {atom}")


def _dimension_key(dims: Dimensions) -> str:
    named = _NAMED_DIMENSIONS.get(dims)
    if named is not None:
        return named
    return ".".join(f"{sym.strip('[]{}')}{'' if p == 1 else p}" for sym, p in zip(_DIMS, dims, strict=True) if p)


# The keys of the dimensions the first UCUM subset knew, kept for its callers ("time" ...).
_NAMED_DIMENSIONS: dict[Dimensions, str] = {
    _dim(m=1): "length",
    _dim(g=1): "mass",
    _dim(s=1): "time",
    _dim(m=3): "volume",
    _dim(mol=1): "amount",
    _dim(m=-1, g=1, s=-2): "pressure",
    _dim(Cel=1): "temperature-c",
    _ONE: "ratio",
}


def canonical(code: str) -> tuple[str, Decimal] | None:
    """(dimension key, factor) of a UCUM code, or None when it is not a unit we can read.

    Contract: the dimension key is equal for exactly the commensurable units ("mg", "g" and
    "kg"; "mg/dL" and "g/L"; "10*3/uL" and "10*9/L"), and ``value * factor`` is the value in the
    canonical unit of that dimension, the product of UCUM base units (m, g, s, mol, K, C, cd, rad):
    ``canonical("mg") == ("mass", Decimal("0.001"))``, ``canonical("L") == ("volume", Decimal("0.001"))``
    (m3), ``canonical("h") == ("time", Decimal(3600))``. Common dimensions have names ("length",
    "mass", "time", "volume", "amount", "pressure", "ratio" for dimensionless), others a key
    spelled from the base units (``"m-3.g"`` for mass concentration). FHIRPath's private calendar
    units (``{cal_year}``) are not UCUM and give None.
    """
    if not code or "{cal_" in code:
        return None
    parsed = parse_unit(code)
    if parsed is None:
        return None
    factor, dims = parsed
    return _dimension_key(dims), factor


def compare_quantities(a_value: Decimal, a_code: str, b_value: Decimal, b_code: str) -> int | None:
    """-1/0/1 ordering of ``a_value a_code`` against ``b_value b_code``; None when the units are
    not comparable (different dimensions, or a code that is not understood). Equal codes compare
    their values as they are, understood or not."""
    if a_code == b_code:
        return (a_value > b_value) - (a_value < b_value)
    ca, cb = canonical(a_code), canonical(b_code)
    if ca is None or cb is None or ca[0] != cb[0]:
        return None
    x, y = a_value * ca[1], b_value * cb[1]
    return (x > y) - (x < y)
