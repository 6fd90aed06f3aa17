"""The ``_filter`` grammar and its translation (https://hl7.org/fhir/R4/search_filter.html): precedence
(not > and > or), strings with JSON escapes, tokens, errors naming the position and what was expected,
limits, and each comparison parsed into the criterion of the equivalent plain parameter."""

from __future__ import annotations

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError
from fhir_exchange.search.filter import And, Comparison, Negation, Or, parse_expression
from fhir_exchange.search.limits import SETTING, SearchLimits
from fhir_exchange.search.parse import parse
from fhir_exchange.search.query import AllOf, AnyOf, Chain, Not, Param


def C(path: str, op: str, value: str, pos: int) -> Comparison:
    return Comparison(path, op, value, pos)


def test_precedence_not_and_or() -> None:
    assert parse_expression("a eq 1 or b eq 2 and c eq 3") == Or((C("a", "eq", "1", 0), And((
        C("b", "eq", "2", 10), C("c", "eq", "3", 21)))))
    assert parse_expression("a eq 1 and b eq 2 or c eq 3") == Or((And((
        C("a", "eq", "1", 0), C("b", "eq", "2", 11))), C("c", "eq", "3", 21)))
    assert parse_expression("(a eq 1 or b eq 2) and c eq 3") == And((Or((
        C("a", "eq", "1", 1), C("b", "eq", "2", 11))), C("c", "eq", "3", 23)))
    assert parse_expression("not (a eq 1) and b eq 2") == And((Negation(C("a", "eq", "1", 5)), C("b", "eq", "2", 17)))
    # n-ary, not nested: a long chain of ors is flat
    assert parse_expression("a eq 1 or a eq 2 or a eq 3") == Or((C("a", "eq", "1", 0), C("a", "eq", "2", 10),
                                                                 C("a", "eq", "3", 20)))


def test_the_issue_examples() -> None:
    tree = parse_expression('name co "pet" and (gender eq female or birthdate ge 1990-01-01)')
    assert tree == And((C("name", "co", "pet", 0), Or((C("gender", "eq", "female", 19),
                                                          C("birthdate", "ge", "1990-01-01", 39)))))
    assert parse_expression('subject.name eq "Kim"') == C("subject.name", "eq", "Kim", 0)
    assert parse_expression("not (status eq final)") == Negation(C("status", "eq", "final", 5))


def test_values_strings_tokens_and_spacing() -> None:
    assert parse_expression(r'name eq "a \"b\" \\ c\u00e9 (x) and y"') == C("name", "eq", 'a "b" \\ cé (x) and y', 0)
    assert parse_expression("code eq http://loinc.org|1234-5") == C("code", "eq", "http://loinc.org|1234-5", 0)
    assert parse_expression("value-quantity lt 5.4|http://unitsofmeasure.org|mg").value == \
        "5.4|http://unitsofmeasure.org|mg"
    assert parse_expression("  not(a eq x)and(b eq y)  ") == And((Negation(C("a", "eq", "x", 6)),
                                                                  C("b", "eq", "y", 17)))
    assert parse_expression("a EQ 1 AND NOT (b Ne 2)") == And((C("a", "eq", "1", 0), Negation(C("b", "ne", "2", 16))))
    assert parse_expression("a eq 1 and organization eq x").items[1] == C("organization", "eq", "x", 11)  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "position", "expected"), [
    ("", None, "empty"),
    ("a eq", 5, "a space and a value after 'a eq'"),
    ("a eq 1 and", 11, "a parameter name, 'not' or '('"),
    ("(a eq 1", 8, "')' closing the '(' at position 1"),
    ("a foo 1", 3, "an operator (eq, ne, co"),
    ('a eq "abc', 10, "a '\"' closing the string"),
    (r'a eq "\x"', 6, "a string with JSON escapes only"),
    ("a eq 1 )", 8, "'and', 'or' or the end of the filter"),
    ("a eq 1 b eq 2", 8, "'and', 'or' or the end of the filter"),
    ("not a eq 1", 5, "'(' after 'not'"),
    ("a:exact eq 1", 2, "a space and an operator after the parameter name 'a'"),
    ("= eq 1", 1, "a parameter name"),
    ("a eq 1 or ()", 12, "a parameter name"),
])
def test_syntax_errors_name_position_and_expectation(text: str, position: int | None, expected: str) -> None:
    with pytest.raises(FhirError) as err:
        parse_expression(text)
    assert err.value.status == 400
    msg = err.value.diagnostics
    assert expected in msg, msg
    if position is not None:
        assert f"at position {position}:" in msg, msg
    assert err.value.expression == ("_filter",)


def test_path_filters_are_refused_as_not_supported() -> None:
    with pytest.raises(FhirError) as err:
        parse_expression('related[type eq "has-component"].target pr true')
    assert err.value.issues[0].code == "not-supported" and "position 8" in err.value.diagnostics


def test_nesting_depth_limit() -> None:
    assert parse_expression("((((a eq 1))))", max_depth=4) == C("a", "eq", "1", 4)
    with pytest.raises(FhirError) as err:
        parse_expression("((((a eq 1))))", max_depth=3)
    assert err.value.issues[0].code == "too-costly" and SETTING["max_filter_depth"] in err.value.diagnostics
    with pytest.raises(FhirError):  # deep enough to overflow the stack without the limit: still a 400
        parse_expression("not(" * 5000 + "a eq 1" + ")" * 5000)


# -- translation into the query model -------------------------------------------------------------------


def crits(defs: Definitions, type: str, text: str, **kw: object) -> tuple[object, ...]:
    return parse(defs, type, [("_filter", text)], **kw).params  # type: ignore[arg-type]


def plain(defs: Definitions, type: str, name: str, value: str) -> object:
    (c,) = parse(defs, type, [(name, value)]).params
    return c


def test_comparisons_are_the_plain_parameters(definitions: Definitions) -> None:
    d = definitions
    same = [
        ("Patient", "gender eq female", "gender", "female"),
        ("Patient", "gender ne female", "gender:not", "female"),
        ("Patient", 'name co "pet"', "name:contains", "pet"),
        ("Patient", 'name sw "pet"', "name", "pet"),
        ("Patient", "birthdate ge 1990-01-01", "birthdate", "ge1990-01-01"),
        ("Patient", "birthdate sa 1990", "birthdate", "sa1990"),
        ("Patient", "identifier eq urn:mrn|12", "identifier", "urn:mrn|12"),
        ("Patient", "active pr true", "active:missing", "false"),
        ("Patient", "active pr false", "active:missing", "true"),
        ("Patient", "_id eq p1", "_id", "p1"),
        ("Patient", "_id ne p1", "_id:not", "p1"),
        ("Patient", 'family sw "a,b|c"', "family", "a\\,b\\|c"),  # one value, not two
        ("Observation", "value-quantity lt 5.4|http://unitsofmeasure.org|mg", "value-quantity",
         "lt5.4|http://unitsofmeasure.org|mg"),
        ("Observation", "value-quantity ap 80", "value-quantity", "ap80"),
        ("Observation", "subject eq Patient/p1", "subject", "Patient/p1"),
        ("Observation", "subject re Patient/p1", "subject", "Patient/p1"),
        ("Observation", "subject.gender eq male", "subject.gender", "male"),
        ("Observation", "code-value-quantity eq 8480-6$gt70", "code-value-quantity", "8480-6$gt70"),
        ("ValueSet", "url sw http://hl7.org/fhir/", "url:below", "http://hl7.org/fhir/"),
        ("Location", "near eq 37.5|126.9|10|km", "near", "37.5|126.9|10|km"),
    ]
    for type, text, name, value in same:
        assert crits(d, type, text) == (plain(d, type, name, value),), text


def test_string_modes_negation_and_booleans(definitions: Definitions) -> None:
    d = definitions
    (eq,) = crits(d, "Patient", 'name eq "Müller"')
    assert isinstance(eq, Param) and eq.modifier == "eq" and eq.values == plain(d, "Patient", "name", "Müller").values  # type: ignore[attr-defined]
    (ew,) = crits(d, "Patient", 'family ew "ller"')
    assert isinstance(ew, Param) and ew.modifier == "ew"
    (ne,) = crits(d, "Patient", 'name ne "Kim"')
    assert isinstance(ne, Not) and isinstance(ne.criterion, Param) and ne.criterion.modifier == "eq"
    (chain,) = crits(d, "Observation", 'subject.name eq "Kim"')
    assert isinstance(chain, Chain) and isinstance(chain.criterion, Param) and chain.criterion.modifier == "eq"
    (ref_ne,) = crits(d, "Observation", "subject ne Patient/p1")
    assert ref_ne == Not(plain(d, "Observation", "subject", "Patient/p1"))  # type: ignore[arg-type]
    # the top-level "and" becomes separate criteria (a store drives by the most selective); nested ones AllOf
    top = crits(d, "Patient", "gender eq male and not (active eq true or birthdate lt 1990)")
    assert top == (plain(d, "Patient", "gender", "male"), Not(AnyOf((plain(d, "Patient", "active", "true"),  # type: ignore[arg-type]
                                                                     plain(d, "Patient", "birthdate", "lt1990")))))  # type: ignore[arg-type]
    (nested,) = crits(d, "Patient", "gender eq male or (active eq true and birthdate lt 1990)")
    assert isinstance(nested, AnyOf) and isinstance(nested.criteria[1], AllOf)


def test_filter_is_anded_with_other_parameters_and_kept_in_the_self_link(definitions: Definitions) -> None:
    q = parse(definitions, "Patient", [("gender", "male"), ("_filter", "active eq true"), ("_count", "5")])
    assert len(q.params) == 2 and ("_filter", "active eq true") in q.link_params


@pytest.mark.parametrize(("type", "text", "expected", "code"), [
    ("Patient", "foo eq 1", "Unknown or unsupported search parameter 'foo' in _filter at position 1", "not-supported"),
    ("Patient", "gender eq male or bar eq 2", "'bar' in _filter at position 19", "not-supported"),
    ("Patient", "name gt 1", "the operator 'gt' is not supported on the string parameter 'name'", "not-supported"),
    ("Patient", "gender co ma", "the operator 'co' is not supported on the token parameter 'gender'", "not-supported"),
    ("Patient", "birthdate po 2020", "the operator 'po' is not supported", "not-supported"),
    ("Patient", "active pr maybe", "'active pr' takes true or false", "invalid"),
    ("Patient", "birthdate eq 19x", "at position 1: Invalid date", "invalid"),
    ("Observation", "subject.nosuch eq 1", "Unknown chained parameter", "invalid"),
    ("Patient", "gender.name eq x", "Cannot chain on 'gender'", "invalid"),
])
def test_semantic_errors(definitions: Definitions, type: str, text: str, expected: str, code: str) -> None:
    with pytest.raises(FhirError) as err:
        parse(definitions, type, [("_filter", text)])
    assert err.value.status == 400 and expected in err.value.diagnostics, err.value.diagnostics
    assert err.value.issues[0].code == code


def test_unknown_parameter_strict_default_and_lenient(definitions: Definitions) -> None:
    for strict in (False, True):
        with pytest.raises(FhirError):
            parse(definitions, "Patient", [("_filter", "foo eq 1")], strict=strict)
    q = parse(definitions, "Patient", [("_filter", "foo eq 1"), ("gender", "male")], lenient=True)
    assert q.params == (plain(definitions, "Patient", "gender", "male"),)
    assert q.link_params == (("gender", "male"),)  # the dropped filter is not in the self link
    with pytest.raises(FhirError):  # lenient drops unknown parameters, not syntax errors
        parse(definitions, "Patient", [("_filter", "gender eq")], lenient=True)
    with pytest.raises(FhirError):
        parse(definitions, "Patient", [("_filter:exact", "gender eq male")])


def test_limits_count_comparisons_and_chain_depth(definitions: Definitions) -> None:
    limits = SearchLimits(max_criteria=4, max_chain_depth=1)
    ok = " or ".join(["gender eq male"] * 3)
    parse(definitions, "Patient", [("_filter", ok), ("active", "true")], limits=limits)
    with pytest.raises(FhirError) as err:
        parse(definitions, "Patient", [("_filter", ok + " or gender eq female"), ("active", "true")], limits=limits)
    assert err.value.issues[0].code == "too-costly" and SETTING["max_criteria"] in err.value.diagnostics
    parse(definitions, "Observation", [("_filter", "subject.name eq x")], limits=limits)
    with pytest.raises(FhirError) as err:
        parse(definitions, "Observation", [("_filter", "subject.organization.name eq x")], limits=limits)
    assert SETTING["max_chain_depth"] in err.value.diagnostics


def test_system_search_uses_common_parameters(definitions: Definitions) -> None:
    q = parse(definitions, None, [("_filter", "_id eq x or _lastUpdated gt 2020"), ("_type", "Patient,Observation")])
    (c,) = q.params
    assert isinstance(c, AnyOf) and len(c.criteria) == 2


def test_subscription_criteria_refuse_chains_inside_a_filter(definitions: Definitions) -> None:
    from fhir_exchange.notify.criteria import CriteriaError, parse_criteria

    assert parse_criteria(definitions, "Observation?_filter=" + "status eq final or not (code eq x)").params
    with pytest.raises(CriteriaError):
        parse_criteria(definitions, "Observation?_filter=" + "status eq final or not (subject.name eq x)")
