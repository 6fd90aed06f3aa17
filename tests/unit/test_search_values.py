"""Value semantics of search (https://hl7.org/fhir/R4/search.html#ptypes): normalisation, date ranges
at each precision and zone, number precision, escaping, and the matcher as the oracle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.search.params import date, split_escaped, unescape
from fhir_exchange.search.params.number import parse_number
from fhir_exchange.search.params.string import normalize
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import Param, TokenValue


def test_normalize_folds_accents_and_case_but_keeps_hangul() -> None:
    assert normalize("Müller") == "muller"
    assert normalize("ÉLODIE  Zoë") == "elodie zoe"
    assert normalize("Straße") == "strasse"
    assert normalize("김민준") == "김민준"
    assert not normalize("김").startswith("ㄱ")


@given(st.text(max_size=20))
def test_normalize_is_idempotent(s: str) -> None:
    assert normalize(normalize(s)) == normalize(s)


@pytest.mark.parametrize(("value", "low", "width_s"), [
    ("2020", "2020-01-01T00:00:00+00:00", 366 * 86400),
    ("2021-02", "2021-02-01T00:00:00+00:00", 28 * 86400),
    ("2021-02-03", "2021-02-03T00:00:00+00:00", 86400),
    ("2021-02-03T10:00:00+09:00", "2021-02-03T01:00:00+00:00", 1),
    ("2021-02-03T10:00+09:00", "2021-02-03T01:00:00+00:00", 60),
    ("2021-02-03T10:00:00.5Z", "2021-02-03T10:00:00.5+00:00", 0.1),
])
def test_date_ranges(value: str, low: str, width_s: float) -> None:
    r = date.parse_range(value)
    assert r is not None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert r[0] == int((datetime.fromisoformat(low) - epoch).total_seconds() * 1_000_000)
    assert r[1] - r[0] == int(width_s * 1_000_000)


def test_bad_dates_are_rejected() -> None:
    for bad in ("2020-13", "2020-02-30", "20", "2020-01-01T25:00Z", "x"):
        assert date.parse_range(bad) is None


def test_number_precision() -> None:
    n = parse_number("100", "x")
    assert (n.low, n.high) == (99.5, 100.5)
    n = parse_number("100.00", "x")
    assert (n.low, n.high) == (99.995, 100.005)
    assert parse_number("gt1e2", "x").prefix == "gt"


def test_escaping() -> None:
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert unescape(r"a\,b\|c\$d\\e") == "a,b|c$d\\e"


def test_parse_errors_name_the_parameter(definitions: Definitions) -> None:
    cases = [("birthdate", "2020-13"), ("name:nope", "x"), ("_sort", "unknown"), ("_count", "-1"),
             ("identifier:of-type", "a|b"), ("_has:Observation:nope:code", "x"), ("subject:Nope.name", "x"),
             ("_include", "Observation"), ("_summary", "maybe")]
    for name, value in cases:
        with pytest.raises(FhirError) as err:
            parse(definitions, "Patient" if not name.startswith("subject") else "Observation", [(name, value)])
        assert err.value.status == 400
        assert err.value.issues[0].expression == (name,), name


def test_in_expands_value_set(definitions: Definitions) -> None:
    q = parse(definitions, "Patient", [("gender:in", "http://hl7.org/fhir/ValueSet/administrative-gender")])
    p = q.params[0]
    assert isinstance(p, Param) and TokenValue("", "male") in p.values


def test_strict_and_lenient(definitions: Definitions) -> None:
    q = parse(definitions, "Patient", [("nope", "1"), ("gender", "male")])
    assert [k for k, _ in q.link_params] == ["gender"]
    with pytest.raises(FhirError):
        parse(definitions, "Patient", [("nope", "1")], strict=True)
