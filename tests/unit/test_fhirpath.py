"""Unit tests of ``fhir_exchange.fhir.fhirpath`` beyond the official suite.

The official cases live in tests/conformance/test_fhirpath_suite.py. Here: the public API
contract other modules rely on, the FHIR functions (resolve, conformsTo, memberOf, htmlChecks,
hasValue...), primitive extensions, the environment, errors, the static check, every
expression of the R4 core package, and a speed sanity check.
"""

from __future__ import annotations

import json
import tarfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath import (
    CompiledPath,
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSemanticError,
    FhirPathSyntaxError,
    TypedValue,
    compile,
    constraint_holds,
    evaluate,
    is_true,
)

CORE_PACKAGE = Path(fhirpath.__file__).resolve().parents[2] / "packages" / "hl7.fhir.r4.core-4.0.1.tgz"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"profile": ["http://example.org/fhir/StructureDefinition/kr-patient"]},
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hong <b>Gildong</b></p></div>',
    },
    "active": True,
    "name": [
        {"use": "official", "family": "Hong", "given": ["Gildong", "GD"]},
        {
            "use": "nickname",
            "given": [None, "Gil"],
            "_given": [{"extension": [{"url": "http://x/syl", "valueInteger": 3}]}],
        },
    ],
    "gender": "male",
    "birthDate": "1980-03-01",
    "_birthDate": {"extension": [{"url": "http://x/time", "valueDateTime": "1980-03-01T04:30:00+09:00"}]},
    "managingOrganization": {"reference": "#org1"},
    "generalPractitioner": [{"reference": "Practitioner/pr1"}, {"reference": "urn:uuid:unknown"}],
    "contained": [{"resourceType": "Organization", "id": "org1", "name": "Seoul Rehab"}],
    "extension": [{"url": "http://x/ext", "valueCodeableConcept": {"text": "a"}}],
}


# -- public API contract ------------------------------------------------------------------------


def test_compile_is_cached_and_returns_a_compiled_path() -> None:
    first = compile("name.given")
    assert isinstance(first, CompiledPath)
    assert compile("name.given") is first
    assert first.expression == "name.given"


def test_evaluate_convenience_equals_compiled_evaluate() -> None:
    assert evaluate(PATIENT, "name.family") == compile("name.family").evaluate(PATIENT) == ["Hong"]


def test_results_are_plain_json_values() -> None:
    assert evaluate(PATIENT, "name.first().given") == ["Gildong", "GD"]
    assert evaluate(PATIENT, "contained.name") == ["Seoul Rehab"]
    assert evaluate(PATIENT, "name.where(use = 'official')") == [PATIENT["name"][0]]
    assert evaluate(PATIENT, "1.5 + 1") == [Decimal("2.5")]
    assert evaluate(PATIENT, "birthDate + 1 day") == ["1980-03-02"]
    assert evaluate(PATIENT, "5 'mg'") == [
        {"value": 5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    ]


def test_evaluate_typed_reports_fhirpath_types() -> None:
    path = compile("birthDate | active | name.first() | 1 | @2020")
    assert path.evaluate_typed(PATIENT) == [
        TypedValue("1980-03-01", "FHIR.date"),
        TypedValue(True, "FHIR.boolean"),
        TypedValue(PATIENT["name"][0], "FHIR.HumanName"),
        TypedValue(1, "System.Integer"),
        TypedValue("2020", "System.Date"),
    ]


def test_context_defaults_to_resource_and_can_be_an_element() -> None:
    name = PATIENT["name"][0]
    assert evaluate(PATIENT, "given.count()", name) == [2]
    assert evaluate(PATIENT, "%context.family", name) == ["Hong"]
    assert evaluate(PATIENT, "%resource.id", name) == ["p1"]


def test_context_path_types_the_focus() -> None:
    extension = {"url": "http://x", "valueQuantity": {"value": 3, "unit": "mg", "code": "mg"}}
    assert evaluate(PATIENT, "value is Quantity", extension, context_path="Extension") == [True]
    assert evaluate(PATIENT, "value.value", extension, context_path="Extension") == [3]
    assert evaluate(PATIENT, "$this", "1980", context_path="Patient.birthDate") == ["1980"]
    assert evaluate(PATIENT, "$this < @2000", "1980", context_path="date") == [True]
    # vs-1 on Observation.effective[x]: the concrete element or type types the focus
    vs1 = "($this as dateTime).toString().length() >= 8"
    assert evaluate(PATIENT, vs1, "2020-01-01", context_path="Observation.effectiveDateTime") == [True]
    assert evaluate(PATIENT, vs1, "2020", context_path="dateTime") == [False]
    assert evaluate(PATIENT, "$this.is(BackboneElement)", "2020", context_path="Observation.effective[x]") == [False]


def test_untyped_element_context_still_finds_choice_elements() -> None:
    # The validator may hand over a bare element; ext-1 must not fail on every extension.
    extension = {"url": "http://x", "valueString": "v"}
    assert evaluate(PATIENT, "extension.exists() != value.exists()", extension) == [True]
    assert evaluate(PATIENT, "children().count() > id.count()", extension) == [True]


def test_leading_type_name_filters_by_type_with_inheritance() -> None:
    extension = {"url": "http://x", "valueString": "v"}
    assert evaluate(PATIENT, "Patient.name.family") == ["Hong"]
    assert evaluate(PATIENT, "Resource.id | DomainResource.id") == ["p1"]
    assert evaluate(PATIENT, "Observation.id") == []
    assert evaluate(PATIENT, "Extension.url", extension, context_path="Extension") == ["http://x"]
    assert evaluate(PATIENT, "Extension.url", extension) == ["http://x"]  # untyped: kept


def test_is_true_and_constraint_holds() -> None:
    assert is_true([True]) and not is_true([False]) and not is_true([])
    assert is_true(["a"])  # singleton evaluation: one non-boolean item is true
    assert constraint_holds([]) and constraint_holds([True]) and not constraint_holds([False])
    with pytest.raises(FhirPathEvaluationError):
        is_true([True, True])
    with pytest.raises(FhirPathEvaluationError):
        constraint_holds([True, False])


# -- environment --------------------------------------------------------------------------------


def test_environment_variables() -> None:
    assert evaluate(PATIENT, "%ucum") == ["http://unitsofmeasure.org"]
    assert evaluate(PATIENT, "%sct") == ["http://snomed.info/sct"]
    assert evaluate(PATIENT, "%loinc") == ["http://loinc.org"]
    assert evaluate(PATIENT, "%`vs-administrative-gender`") == ["http://hl7.org/fhir/ValueSet/administrative-gender"]
    assert evaluate(PATIENT, "%`ext-patient-birthTime`") == [
        "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    ]
    assert evaluate(PATIENT, "%resource.id | %rootResource.id") == ["p1"]


def test_root_resource_for_contained_resources() -> None:
    contained = PATIENT["contained"][0]
    assert evaluate(contained, "%resource.id", root_resource=PATIENT) == ["org1"]
    assert evaluate(contained, "%rootResource.id", root_resource=PATIENT) == ["p1"]


def test_user_variables_and_undefined_variables() -> None:
    assert evaluate(PATIENT, "name.where(use = %use).family", variables={"use": "official"}) == ["Hong"]
    assert evaluate(PATIENT, "%codes.count()", variables={"codes": ["a", "b"]}) == [2]
    with pytest.raises(FhirPathEvaluationError, match="undefined"):
        evaluate(PATIENT, "%nope")


def test_now_and_today_use_the_injected_clock() -> None:
    now = datetime(2024, 2, 29, 23, 30, 5, 123456, tzinfo=timezone(timedelta(hours=9)))
    assert evaluate(PATIENT, "today()", now=now) == ["2024-02-29"]
    assert evaluate(PATIENT, "now()", now=now) == ["2024-02-29T23:30:05.123+09:00"]
    assert evaluate(PATIENT, "timeOfDay()", now=now) == ["23:30:05.123"]
    assert evaluate(PATIENT, "now() = now()") == [True]  # constant within one evaluation
    assert evaluate(PATIENT, "birthDate < today()") == [True]


# -- primitives and their extensions --------------------------------------------------------------


def test_primitive_with_extension_is_one_item() -> None:
    assert evaluate(PATIENT, "birthDate.count()") == [1]
    assert evaluate(PATIENT, "birthDate = @1980-03-01") == [True]
    assert evaluate(PATIENT, "birthDate.extension('http://x/time').value") == ["1980-03-01T04:30:00+09:00"]
    assert evaluate(PATIENT, "birthDate.extension.url") == ["http://x/time"]


def test_primitive_without_value_but_with_extension() -> None:
    assert evaluate(PATIENT, "name[1].given.count()") == [2]
    assert evaluate(PATIENT, "name[1].given.select(hasValue())") == [False, True]
    assert evaluate(PATIENT, "name[1].given") == ["Gil"]
    assert evaluate(PATIENT, "name[1].given.extension('http://x/syl').value") == [3]


def test_has_value_and_get_value() -> None:
    assert evaluate(PATIENT, "gender.hasValue()") == [True]
    assert evaluate(PATIENT, "name.first().hasValue()") == [False]
    assert evaluate(PATIENT, "name.given.hasValue()") == [False]  # not a single item
    assert evaluate(PATIENT, "birthDate.getValue()") == ["1980-03-01"]
    assert compile("birthDate.getValue()").evaluate_typed(PATIENT) == [TypedValue("1980-03-01", "System.Date")]


def test_extension_function_returns_every_match() -> None:
    resource = {
        "resourceType": "Basic",
        "extension": [{"url": "u", "valueInteger": 1}, {"url": "u", "valueInteger": 2}],
    }
    assert evaluate(resource, "extension('u').value") == [1, 2]
    assert evaluate(resource, "hasExtension('u')") == [True]


# -- resolve() ----------------------------------------------------------------------------------


def test_resolve_contained() -> None:
    assert evaluate(PATIENT, "managingOrganization.resolve().name") == ["Seoul Rehab"]
    assert evaluate(PATIENT, "managingOrganization.resolve() is Organization") == [True]


def test_resolve_in_bundle_by_full_url_and_relative_reference() -> None:
    patient = {"resourceType": "Patient", "id": "a", "name": [{"family": "Kim"}]}
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:11"},
        "performer": [{"reference": "Patient/a"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11", "resource": patient},
            {"fullUrl": "urn:uuid:22", "resource": observation},
        ],
    }
    assert evaluate(observation, "subject.resolve().name.family", root_resource=bundle) == ["Kim"]
    assert evaluate(observation, "performer.resolve().name.family", root_resource=bundle) == ["Kim"]
    assert evaluate(bundle, "entry.resource.subject.resolve().id") == ["a"]


def test_resolve_uses_the_resolver_then_a_typed_stub() -> None:
    seen: list[str] = []

    def resolver(reference: str) -> dict[str, Any] | None:
        seen.append(reference)
        return (
            {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Lee"}]}
            if reference == "Practitioner/pr1"
            else None
        )

    assert evaluate(PATIENT, "generalPractitioner.resolve().name.family", resolver=resolver) == ["Lee"]
    assert seen == ["Practitioner/pr1", "urn:uuid:unknown"]
    # Without a resolver a typed reference still resolves to its type, as search parameters need.
    assert evaluate(PATIENT, "generalPractitioner.where(resolve() is Practitioner).reference") == ["Practitioner/pr1"]
    assert evaluate(PATIENT, "generalPractitioner.resolve().id") == ["pr1"]


def test_hook_exceptions_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    def resolver(reference: str) -> dict[str, Any] | None:
        raise Boom(reference)

    with pytest.raises(Boom):
        evaluate(PATIENT, "generalPractitioner.resolve()", resolver=resolver)


# -- conformsTo(), memberOf(), htmlChecks(), trace(), checkModifiers() ----------------------------


def test_conforms_to_default_and_hook() -> None:
    assert evaluate(PATIENT, "conformsTo('http://hl7.org/fhir/StructureDefinition/Patient')") == [True]
    assert evaluate(PATIENT, "conformsTo('http://hl7.org/fhir/StructureDefinition/DomainResource')") == [True]
    assert evaluate(PATIENT, "conformsTo('http://hl7.org/fhir/StructureDefinition/Person')") == [False]
    assert evaluate(PATIENT, "conformsTo('http://example.org/fhir/StructureDefinition/kr-patient')") == [True]
    with pytest.raises(FhirPathEvaluationError, match="conformance"):
        evaluate(PATIENT, "conformsTo('http://example.org/other')")
    calls: list[str] = []
    hook = lambda resource, url: calls.append(url) or url.endswith("/other")  # noqa: E731
    assert evaluate(PATIENT, "conformsTo('http://example.org/other')", conforms_to=hook) == [True]
    assert calls == ["http://example.org/other"]


def test_member_of_needs_a_hook() -> None:
    assert evaluate(PATIENT, "gender.memberOf(%`vs-administrative-gender`)") == []
    hook = lambda value, url: value in ("male", "female")  # noqa: E731
    assert evaluate(PATIENT, "gender.memberOf(%`vs-administrative-gender`)", member_of=hook) == [True]
    coding = {"resourceType": "Basic", "code": {"coding": [{"system": "s", "code": "c"}]}}
    got: list[Any] = []
    evaluate(coding, "code.memberOf('http://vs')", member_of=lambda v, u: got.append(v) or True)
    assert got == [{"coding": [{"system": "s", "code": "c"}]}]


@pytest.mark.parametrize(
    ("div", "ok"),
    [
        ('<div xmlns="http://www.w3.org/1999/xhtml">text</div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><table><tr><td colspan="2">x</td></tr></table></div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><img src="#pic" alt="x"/></div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><a href="http://x">l</a><br/>&nbsp;&amp;</div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><span style="color: red">x</span></div>', True),
        ("<div>no namespace</div>", False),
        ('<div xmlns="http://www.w3.org/1999/xhtml">   </div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">x</p></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:x()">x</a></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><form>x</form></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p style="background: url(http://e/x.png)">x</p></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>unclosed</div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml">a</div><div>b</div>', False),
    ],
)
def test_html_checks(div: str, ok: bool) -> None:
    resource = {"resourceType": "Basic", "text": {"status": "generated", "div": div}}
    assert evaluate(resource, "text.`div`.htmlChecks()") == [ok]


def test_trace_hook_and_passthrough() -> None:
    traced: list[tuple[str, list[Any]]] = []
    result = evaluate(PATIENT, "name.trace('n', family).count()", trace=lambda n, v: traced.append((n, v)))
    assert result == [2]
    assert traced == [("n", ["Hong"])]


def test_check_modifiers() -> None:
    resource = {"resourceType": "Basic", "modifierExtension": [{"url": "http://ok", "valueBoolean": True}]}
    assert evaluate(resource, "checkModifiers('http://ok').id.empty()") == [True]
    with pytest.raises(FhirPathEvaluationError, match="modifier"):
        evaluate(resource, "checkModifiers('http://other')")


# -- values: dates, quantities, decimals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@2020-01-31 + 1 month", ["2020-02-29"]),
        ("@2020-03-01T10:00:00+09:00 - 11 hours", ["2020-02-29T23:00:00+09:00"]),
        ("@2020-03-01T10:00:00Z = @2020-03-01T19:00:00+09:00", [True]),
        ("@2020-03 < @2020-03-15", []),
        ("@2020 = @2020-01", []),
        ("@T10:00 + 15 hours", ["01:00"]),
        ("4.0 'g' = 4000 'mg'", [True]),
        ("1 '[lb_av]' > 450 'g'", [True]),
        ("1 'kg/m2' = 0.1 'g/cm2'", [True]),
        ("5 'mmol/L' = 5 'umol/mL'", [True]),
        ("1 'cm' < 1 's'", []),
        ("1 'cm'.comparable(1 '[in_i]')", [True]),
        ("1 year = 12 months", [True]),
        ("1 year = 1 'a'", []),
        ("7 days = 1 week", [True]),
        ("10 / 4", [Decimal("2.5")]),
        ("10 div 4", [2]),
        ("-7 mod 3", [-1]),
        ("0.1 + 0.2 = 0.3", [True]),
        ("1.0 = 1", [True]),
        ("'1.50'.toDecimal().precision()", [2]),
        ("2.35.round(1)", [Decimal("2.4")]),
        ("(2 | 1 | 2.0).count()", [2]),
        ("@2014-01-01T08:05+08:00.highBoundary()", ["2014-01-01T08:05:59.999+08:00"]),
        ("'abc'.matches('^a.c$') and 'ABC'.matchesFull('[A-C]+')", [True]),
        ("('b' | 'a' | 'c').sort()", ["a", "b", "c"]),
        ("('b' | 'a' | 'c').sort(-$this)", ["c", "b", "a"]),
    ],
)
def test_values(expression: str, expected: list[Any]) -> None:
    assert evaluate(PATIENT, expression) == expected


def test_fhir_quantity_elements_compare_as_quantities() -> None:
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    assert evaluate(observation, "value > 72000 'g'") == [True]
    assert evaluate(observation, "value = 72.5 'kg'") == [True]
    assert evaluate(observation, "value.value") == [72.5]


def test_decimals_parsed_by_jsonio_keep_their_precision() -> None:
    # fhir.jsonio hands decimals over as floats whose repr() is the original text (1.10, not 1.1)
    from fhir_exchange.fhir import jsonio

    observation = jsonio.loads(b'{"resourceType": "Observation", "valueQuantity": {"value": 1.10, "code": "mg"}}')
    assert evaluate(observation, "value.value.precision()") == [2]
    assert evaluate(observation, "value.value.toString()") == ["1.10"]
    assert evaluate(observation, "value.value = 1.1 and value = 1.1 'mg'") == [True]
    assert repr(evaluate(observation, "value.value")[0]) == "1.10"  # the caller's value, untouched


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-(10**6), max_value=10**6, allow_nan=False, places=4))
def test_boundaries_enclose_the_value(value: Decimal) -> None:
    low, high = evaluate(PATIENT, f"({value}).lowBoundary() | ({value}).highBoundary()")
    assert low <= value <= high


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_integer_arithmetic_matches_python(a: int, b: int) -> None:
    assert evaluate(PATIENT, f"({a}) + ({b})") == [a + b]
    assert evaluate(PATIENT, f"({a}) = ({b})") == [a == b]
    assert evaluate(PATIENT, f"({a}) < ({b})") == [a < b]
    assert evaluate(PATIENT, f"({a}).toString().toInteger()") == [a]


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2100, 1, 1).date()), st.integers(0, 400))
def test_date_arithmetic_matches_python(day: Any, n: int) -> None:
    assert evaluate(PATIENT, f"@{day.isoformat()} + {n} days") == [(day + timedelta(days=n)).isoformat()]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "name.given.",
        "name.given given",
        "2 + 2 /* open comment",
        "name.frobnicate()",
        "name.where()",
        "name.substring(1, 2, 3)",
        "gender.as(strng)",
        "gender is FHIR.strng",
        "@T10:00Z",
        "'\\q'",
        "",
    ],
)
def test_compile_errors(expression: str) -> None:
    with pytest.raises(FhirPathSyntaxError):
        compile(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "name.given.single()",
        "'a' < 1",
        "name.given + 1",
        "'a' - 'b'",
        "@2020 + 1 'mo'",
        "iif('x', 1, 2)",
        "name.given.iif(true, 1, 2)",
        "(true | 'x').allTrue()",
        "'x'.matches('(')",
        "name.given.first().startsWith(1)",
    ],
)
def test_evaluation_errors(expression: str) -> None:
    with pytest.raises(FhirPathEvaluationError):
        evaluate(PATIENT, expression)


def test_quoted_variable_names_and_deep_nesting() -> None:
    assert evaluate(PATIENT, "%'ucum'") == ["http://unitsofmeasure.org"]
    assert evaluate(PATIENT, "%'my var' + 1", variables={"my var": 2}) == [3]
    with pytest.raises(FhirPathSyntaxError, match="deeply"):
        compile("(" * 3000 + "1" + ")" * 3000)


_TOKENS = st.sampled_from(
    ["name", "given", ".", "(", ")", "[0]", "{}", "'a'", "1", "2.5", "@2020-01", "@T10:00", "4 'mg'", "3 days",
     " = ", " != ", " ~ ", " < ", " | ", " and ", " or ", " implies ", " is ", " as ", " + ", " - ", " / ", " & ",
     "where(", "select(", "exists(", "first()", "count()", "iif(", ",", "$this", "%resource", "%x", "Patient",
     "string", "ofType(", "resolve()", "extension(", "hasValue()", "sort(", "-", "today()", "`div`"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, min_size=1, max_size=14).map("".join))
def test_only_fhirpath_errors_escape(expression: str) -> None:
    # Errors are values: whatever a client sends, the caller gets FhirPathError.
    try:
        path = compile(expression)
        path.evaluate(PATIENT, variables={"x": 1})
        path.check("Patient")
    except FhirPathError:
        pass


def test_errors_carry_the_expression() -> None:
    with pytest.raises(FhirPathError) as info:
        evaluate(PATIENT, "name.given.single()")
    assert info.value.expression == "name.given.single()"
    assert "single" in str(info.value)


# -- static check (strict mode) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "base"),
    [
        ("name.given1", "Patient"),
        ("Encounter.status", "Patient"),
        ("Observation.valueQuantity.unit", "Observation"),
        ("(Observation.value as Period).unit", "Observation"),
        ("children().first()", "Patient"),
        ("descendants()[0]", "Patient"),
        ("code.coding.sytem", "Observation"),
        ("contact.name.famly", "Patient"),
        ("given.value", "HumanName"),
    ],
)
def test_check_rejects(expression: str, base: str) -> None:
    with pytest.raises(FhirPathSemanticError):
        compile(expression).check(base)


@pytest.mark.parametrize(
    ("expression", "base"),
    [
        ("Patient.name.given", "Patient"),
        ("Observation.value.unit", "Observation"),
        ("(Observation.value as Quantity).unit", "Observation"),
        ("contact.name.family | contact.telecom.value", "Patient"),
        ("item.item.linkId", "Questionnaire"),
        ("value.code", "Observation.component"),
        ("low.code", "RiskAssessment.prediction.probability[x]"),
        ("Resource.id", "Patient"),
        ("entry.resource.name", "Bundle"),
        ("extension.value.exists()", "Patient"),
        ("anything.goes", "SomeLogicalModel"),
    ],
)
def test_check_accepts(expression: str, base: str) -> None:
    compile(expression).check(base)


def test_check_foreign_roots_for_multi_resource_search_expressions() -> None:
    path = compile("Patient.name | Practitioner.name")
    with pytest.raises(FhirPathSemanticError):
        path.check("Patient")
    path.check("Patient", foreign_roots=True)


# -- the R4 core package ---------------------------------------------------------------------------


@cache
def _core_definitions() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    structures, search_parameters = [], []
    with tarfile.open(CORE_PACKAGE) as package:
        for member in package:
            name = member.name.rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            if name.startswith("StructureDefinition-"):
                structures.append(json.load(package.extractfile(member)))  # type: ignore[arg-type]
            elif name.startswith("SearchParameter-"):
                search_parameters.append(json.load(package.extractfile(member)))  # type: ignore[arg-type]
    return structures, search_parameters


def _invariants() -> Iterator[tuple[str, str, str]]:
    seen = set()
    for sd in _core_definitions()[0]:
        for element in sd.get("snapshot", {}).get("element", []):
            for constraint in element.get("constraint", []):
                key = (element["path"], constraint.get("expression"))
                if constraint.get("expression") and key not in seen:
                    seen.add(key)
                    yield constraint["key"], element["path"], constraint["expression"]


# inv-1 of the substanceExposureRisk extension names its sub-extensions as if they were elements:
# a real defect in R4 that the strict check is right to report.
_R4_CHECK_DEFECTS = {
    ("inv-1", "Extension", "substanceExposureRisk.exists() and code.empty()"),
    # R4 defect: ChargeItemDefinition has no element "name" (the reference validator reports it too).
    ("cid-0", "ChargeItemDefinition", "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')"),
}


def test_every_core_invariant_compiles_and_passes_the_static_check() -> None:
    failures = []
    count = 0
    for key, path, expression in _invariants():
        count += 1
        try:
            compile(expression).check(path)
        except FhirPathError as exc:
            if (key, path, expression) not in _R4_CHECK_DEFECTS:
                failures.append(f"{key} at {path}: {exc}")
    assert count > 1000
    assert not failures, "\n".join(failures)


def test_every_core_search_parameter_compiles_and_passes_the_static_check() -> None:
    failures = []
    for sp in _core_definitions()[1]:
        if not sp.get("expression"):
            continue
        try:
            path = compile(sp["expression"])
            for base in sp["base"]:
                path.check(base, foreign_roots=True)
        except FhirPathError as exc:
            failures.append(f"{sp['id']}: {exc}")
    assert not failures, "\n".join(failures)


def _specialization_constraints() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """{type: {element path: [(key, expression)]}} from the core base definitions."""
    out: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for sd in _core_definitions()[0]:
        if sd.get("derivation") != "specialization":
            continue
        by_path: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for element in sd.get("snapshot", {}).get("element", []):
            for c in element.get("constraint", []):
                if c.get("expression"):
                    by_path[element["path"]].append((c["key"], c["expression"]))
        out[sd["type"]] = by_path
    return out


def _walk(node: Any, path: str, type_path: str, out: list[tuple[Any, str, str]]) -> None:
    """Every element of a resource with its element path and FHIR type (or backbone path)."""
    from fhirpathpy.models import models

    path2type = models["r4"]["path2Type"]
    elsewhere = models["r4"]["pathsDefinedElsewhere"]
    out.append((node, path, type_path))
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key.startswith("_") or key == "resourceType":
            continue
        child_path = elsewhere.get(f"{type_path}.{key}", f"{type_path}.{key}")
        child_type = path2type.get(child_path) or child_path
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "resourceType" in item:
                _walk(item, item["resourceType"], item["resourceType"], out)
            elif item is not None:
                _walk(item, f"{path}.{key}", child_type, out)


SUITE_INPUTS = Path(__file__).resolve().parents[1] / "data" / "fhirpath-r4" / "inputs"
# Invariants that really are broken in the example files (dom-6 is a best-practice warning; the
# suite edited codesystem-example to duplicate a code; the container example's Organization has
# no name and is referenced as "1" rather than "#1").
_EXPECTED_BROKEN = {
    ("codesystem-example.json", "csd-1"),
    ("patient-container-example.json", "dom-3"),
    ("patient-container-example.json", "org-1"),
}


def test_core_invariants_hold_on_the_example_resources() -> None:
    constraints = _specialization_constraints()
    evaluated, broken = 0, []
    for file in sorted(SUITE_INPUTS.glob("*.json")):
        resource = json.loads(file.read_text(encoding="utf-8"))
        elements: list[tuple[Any, str, str]] = []
        _walk(resource, resource["resourceType"], resource["resourceType"], elements)
        for node, path, type_path in elements:
            own = constraints.get(path.split(".")[0], {}).get(path, [])
            inherited = constraints.get(type_path, {}).get(type_path, []) if type_path != path else []
            for key, expression in own + inherited:
                if key == "dom-6" or (file.name, key) in _EXPECTED_BROKEN:
                    continue
                evaluated += 1
                result = compile(expression).evaluate(resource, node, context_path=type_path)
                if not constraint_holds(result):
                    broken.append(f"{file.name} {path}: {key} {expression}")
    assert evaluated > 500
    assert not broken, "\n".join(broken)


# -- speed and threads -----------------------------------------------------------------------------


def test_evaluation_is_tens_of_microseconds_not_milliseconds() -> None:
    path = compile("name.where(use = 'official').given.first() = 'Gildong'")
    assert path.evaluate(PATIENT) == [True]
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        path.evaluate(PATIENT)
    per_call = (time.perf_counter() - started) / runs
    # Typically ~80 µs here; the bound only catches a fall into milliseconds.
    assert per_call < 0.001, f"{per_call * 1e6:.0f} µs per evaluation"


def test_compiled_paths_are_shareable_between_threads() -> None:
    path = compile("name.given.count() + (now() - 1 day < now()).toInteger()")
    results: list[list[Any]] = []

    def work() -> None:
        for _ in range(200):
            results.append(path.evaluate(PATIENT, now=datetime(2024, 1, 1, tzinfo=UTC)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 800
    assert all(r == [5] for r in results)
