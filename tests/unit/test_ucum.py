"""Unit tests of ``fhir_exchange.fhir.fhirpath.ucum``, the server's one UCUM implementation.

The contract other modules rely on: ``canonical(code)`` gives (dimension key, factor to the
canonical unit) with one key for exactly the commensurable units, and None for anything it
cannot read; ``compare_quantities`` orders two quantities across units or says None. FHIRPath's
quantity semantics built on the same parser are exercised too, so the two cannot drift apart.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.ucum import canonical, compare_quantities, parse_unit


def _in_canonical(value: str, code: str) -> tuple[str, Decimal]:
    c = canonical(code)
    assert c is not None, code
    return c[0], Decimal(value) * c[1]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("5.4", "mg"), ("0.0054", "g")),
        (("1", "kg"), ("1000", "g")),
        (("100", "mg/dL"), ("1", "g/L")),
        (("1", "mmol/L"), ("1000", "umol/L")),
        (("5", "10*3/uL"), ("5", "10*9/L")),
        (("1", "[in_i]"), ("2.54", "cm")),
        (("1", "h"), ("60", "min")),
        (("1", "L"), ("1000", "mL")),
        (("1", "kPa"), ("1000", "Pa")),
        (("50", "%"), ("0.5", "1")),
        (("1", "wk"), ("7", "d")),
        (("2", "{cells}/uL"), ("2000", "/mL")),
        (("1", "kg/m2"), ("0.1", "g/cm2")),
    ],
)
def test_commensurable_units_share_a_key_and_convert(a: tuple[str, str], b: tuple[str, str]) -> None:
    key_a, value_a = _in_canonical(*a)
    key_b, value_b = _in_canonical(*b)
    assert key_a == key_b
    assert value_a == value_b
    assert compare_quantities(Decimal(a[0]), a[1], Decimal(b[0]), b[1]) == 0


def test_factors_are_to_the_base_units_and_common_dimensions_are_named() -> None:
    assert canonical("mg") == ("mass", Decimal("0.001"))
    assert canonical("g") == ("mass", Decimal(1))
    assert canonical("h") == ("time", Decimal(3600))
    assert canonical("s") == ("time", Decimal(1))
    assert canonical("[in_i]") == ("length", Decimal("0.0254"))
    assert canonical("L") == ("volume", Decimal("0.001"))  # m3
    assert canonical("mmol") == ("amount", Decimal("0.001"))
    assert canonical("%") == ("ratio", Decimal("0.01"))
    mmhg, kpa = canonical("mm[Hg]"), canonical("kPa")
    assert mmhg is not None and kpa is not None and mmhg[0] == kpa[0] == "pressure"
    assert mmhg[1] / kpa[1] == Decimal("0.133322")


@pytest.mark.parametrize(
    ("a", "b"),
    [("mg", "mL"), ("mg/dL", "mmol/L"), ("h", "m"), ("Cel", "K"), ("[degF]", "Cel"), ("kg", "kg/m2"), ("%", "mg")],
)
def test_incommensurable_units_have_different_keys(a: str, b: str) -> None:
    ca, cb = canonical(a), canonical(b)
    assert ca is not None and cb is not None
    assert ca[0] != cb[0]
    assert compare_quantities(Decimal(1), a, Decimal(1), b) is None


@pytest.mark.parametrize(
    "code",
    ["", "foo", "mg dL", "mg/", "m..s", "()", "(mg", "mg)", "[in_x]", "kmin", "{cal_year}", "{cal_month}", "10*"],
)
def test_what_is_not_understood_is_none_never_a_guess(code: str) -> None:
    assert canonical(code) is None
    assert compare_quantities(Decimal(1), code, Decimal(1), "g") is None


def test_compare_orders_across_units_and_equal_codes_compare_as_they_are() -> None:
    assert compare_quantities(Decimal(10000), "m", Decimal(5), "km") == 1
    assert compare_quantities(Decimal(1), "h", Decimal(30), "min") == 1
    assert compare_quantities(Decimal(29), "min", Decimal("0.5"), "h") == -1
    assert compare_quantities(Decimal(90), "mg/dL", Decimal(1), "g/L") == -1
    # an unknown code still compares with itself (same unit, whatever it is)
    assert compare_quantities(Decimal(2), "{beats}", Decimal(3), "{beats}") == -1
    assert compare_quantities(Decimal(2), "foo", Decimal(2), "foo") == 0


def test_prefixes_only_on_metric_atoms() -> None:
    assert canonical("kmol") == ("amount", Decimal(1000))
    assert canonical("k[in_i]") is None  # customary units take no prefix
    assert canonical("mh") is None  # nor does the hour
    assert canonical("dag") == ("mass", Decimal(10))


def test_parse_unit_is_the_one_fhirpath_uses() -> None:
    # FHIRPath's quantity comparison and conversion go through the same parser.
    assert parse_unit("mg/dL") is not None
    assert fhirpath.evaluate({}, "100 'mg/dL' = 1 'g/L'") == [True]
    assert fhirpath.evaluate({}, "(5.4 'mg').toQuantity('g') = 0.0054 'g'") == [True]
    assert fhirpath.evaluate({}, "1 'mg' = 1 'mL'") == []  # not comparable: empty
    assert fhirpath.evaluate({}, "1 'mg/' = 1 'mg'") == []  # malformed unit: not comparable
    assert fhirpath.evaluate({}, "1 year = 12 months") == [True]
