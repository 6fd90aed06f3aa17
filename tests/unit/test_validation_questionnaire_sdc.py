"""QuestionnaireResponse against its Questionnaire with the SDC item extensions.

Cases written from https://hl7.org/fhir/R4/questionnaire.html (item, enableWhen), the R4 core
extension definitions (minValue, maxValue, minLength, regex, maxDecimalPlaces, mimeType, maxSize,
questionnaire-minOccurs/maxOccurs/referenceResource/unitOption) and the SDC IG
(https://hl7.org/fhir/uv/sdc/behavior.html: answer constraints, min/maxQuantity). Each rule has a
passing and a failing case, so a rule that never fires, or fires on valid data, is caught.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator

Q_URL = "http://example.org/Questionnaire/sdc"
EXT = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
UCUM = "http://unitsofmeasure.org"


@cache
def _defs() -> Definitions:
    return Definitions.load()


def issues(items: list[dict[str, Any]], answers: list[dict[str, Any]], *, status: str = "completed",
           q_extra: dict[str, Any] | None = None, qr_extra: dict[str, Any] | None = None) -> list[str]:
    q = {"resourceType": "Questionnaire", "url": Q_URL, "status": "active", "item": items, **(q_extra or {})}
    qr: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "questionnaire": Q_URL, "status": status,
                          **(qr_extra or {})}
    if answers:
        qr["item"] = answers
    v = Validator(_defs(), fetch_canonical={Q_URL: q}.get)
    return sorted(i.message_id or "" for i in v.validate(qr) if i.severity == "error")


def ext(name: str, **value: Any) -> dict[str, Any]:
    url = name if "://" in name else EXT + name
    return {"url": url, **value}


def item(link: str, type_: str, *exts: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"linkId": link, "type": type_, **kw}
    if exts:
        out["extension"] = list(exts)
    return out


def answer(link: str, *values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"linkId": link, **kw}
    if values:
        out["answer"] = list(values)
    return out


# -- occurrences ----------------------------------------------------------------------------


def test_max_occurs_on_a_question() -> None:
    q = [item("a", "string", ext("questionnaire-maxOccurs", valueInteger=2), repeats=True)]
    two = [answer("a", {"valueString": "x"}, {"valueString": "y"})]
    three = [answer("a", {"valueString": "x"}, {"valueString": "y"}, {"valueString": "z"})]
    assert issues(q, two) == []
    assert issues(q, three) == ["qr-max-occurs"]


def test_min_occurs_on_a_question() -> None:
    q = [item("a", "string", ext("questionnaire-minOccurs", valueInteger=2), repeats=True, required=True)]
    assert issues(q, [answer("a", {"valueString": "x"}, {"valueString": "y"})]) == []
    assert issues(q, [answer("a", {"valueString": "x"})]) == ["qr-min-occurs"]
    # Not required and not answered: minOccurs does not demand the item.
    optional = [item("a", "string", ext("questionnaire-minOccurs", valueInteger=2), repeats=True)]
    assert issues(optional, []) == []


def test_min_and_max_occurs_of_a_repeating_group() -> None:
    q = [item("g", "group", ext("questionnaire-minOccurs", valueInteger=2), ext("questionnaire-maxOccurs",
                                                                                 valueInteger=3),
              repeats=True, required=True, item=[item("a", "string")])]

    def groups(n: int) -> list[dict[str, Any]]:
        return [answer("g", item=[answer("a", {"valueString": str(i)})]) for i in range(n)]

    assert issues(q, groups(2)) == []
    assert issues(q, groups(1)) == ["qr-min-occurs"]
    assert issues(q, groups(4)) == ["qr-max-occurs"]


def test_a_non_repeating_item_appears_once() -> None:
    q = [item("g", "group", item=[item("a", "string")])]
    twice = [answer("g", item=[answer("a", {"valueString": "x"})]),
             answer("g", item=[answer("a", {"valueString": "y"})])]
    assert issues(q, twice) == ["qr-repeats"]


# -- strings --------------------------------------------------------------------------------


def test_regex() -> None:
    q = [item("zip", "string", ext("regex", valueString="[0-9]{5}"))]
    assert issues(q, [answer("zip", {"valueString": "12345"})]) == []
    assert issues(q, [answer("zip", {"valueString": "1234a"})]) == ["qr-answer-regex"]
    # The whole answer must match, not a part of it.
    assert issues(q, [answer("zip", {"valueString": "123456"})]) == ["qr-answer-regex"]


def test_min_length_and_max_length() -> None:
    q = [item("s", "string", ext("minLength", valueInteger=3), maxLength=5)]
    assert issues(q, [answer("s", {"valueString": "abc"})]) == []
    assert issues(q, [answer("s", {"valueString": "ab"})]) == ["qr-answer-length"]
    assert issues(q, [answer("s", {"valueString": "abcdef"})]) == ["qr-answer-length"]


# -- numbers, dates, quantities -------------------------------------------------------------


def test_max_decimal_places() -> None:
    q = [item("d", "decimal", ext("maxDecimalPlaces", valueInteger=2))]
    assert issues(q, [answer("d", {"valueDecimal": 1.25})]) == []
    assert issues(q, [answer("d", {"valueDecimal": 1.255})]) == ["qr-answer-decimals"]


@pytest.mark.parametrize(("type_", "key", "low", "high", "inside", "below", "above"), [
    ("integer", "Integer", 1, 10, 5, 0, 11),
    ("decimal", "Decimal", 0.5, 2.5, 1.5, 0.25, 2.75),
    ("date", "Date", "2020-01-01", "2020-12-31", "2020-06-15", "2019-12-31", "2021-01-01"),
    ("dateTime", "DateTime", "2020-01-01T00:00:00Z", "2020-12-31T23:59:59Z", "2020-06-15T10:00:00Z",
     "2019-12-31T23:00:00Z", "2021-01-01T00:00:01Z"),
    ("time", "Time", "08:00:00", "17:00:00", "12:30:00", "07:59:59", "17:00:01"),
])
def test_min_and_max_value(type_: str, key: str, low: Any, high: Any, inside: Any, below: Any, above: Any) -> None:
    q = [item("v", type_, ext("minValue", **{f"value{key}": low}), ext("maxValue", **{f"value{key}": high}))]
    assert issues(q, [answer("v", {f"value{key}": inside})]) == []
    assert issues(q, [answer("v", {f"value{key}": below})]) == ["qr-answer-range"]
    assert issues(q, [answer("v", {f"value{key}": above})]) == ["qr-answer-range"]


def test_date_answer_against_date_time_limit_compares_at_the_coarser_precision() -> None:
    q = [item("v", "dateTime", ext("minValue", valueDateTime="2020-01-01T10:00:00Z"))]
    assert issues(q, [answer("v", {"valueDate": "2020-01-01"})]) == []
    assert issues(q, [answer("v", {"valueDate": "2019-12-31"})]) == ["qr-answer-range"]


def test_quantity_limits_with_units() -> None:
    q = [item("w", "quantity",
              ext(SDC + "sdc-questionnaire-minQuantity", valueQuantity={"value": 1, "system": UCUM, "code": "kg"}),
              ext(SDC + "sdc-questionnaire-maxQuantity", valueQuantity={"value": 200, "system": UCUM, "code": "kg"}))]

    def w(value: float, code: str) -> list[dict[str, Any]]:
        return [answer("w", {"valueQuantity": {"value": value, "system": UCUM, "code": code}})]

    assert issues(q, w(70, "kg")) == []
    assert issues(q, w(70000, "g")) == []  # converted: 70 kg
    assert issues(q, w(500, "g")) == ["qr-answer-range"]
    assert issues(q, w(250, "kg")) == ["qr-answer-range"]
    assert issues(q, w(5, "m")) == ["qr-answer-units"]  # a length cannot be compared with a mass


def test_unit_options() -> None:
    opts = [ext("questionnaire-unitOption", valueCoding={"system": UCUM, "code": "kg"}),
            ext("questionnaire-unitOption", valueCoding={"system": UCUM, "code": "[lb_av]"})]
    q = [item("w", "quantity", *opts)]
    assert issues(q, [answer("w", {"valueQuantity": {"value": 7, "system": UCUM, "code": "kg"}})]) == []
    assert issues(q, [answer("w", {"valueQuantity": {"value": 7, "system": UCUM, "code": "g"}})]) == [
        "qr-unit-option"]


# -- attachments and references -------------------------------------------------------------


def test_mime_type() -> None:
    q = [item("f", "attachment", ext("mimeType", valueCode="application/pdf"), ext("mimeType", valueCode="image/*"))]
    assert issues(q, [answer("f", {"valueAttachment": {"contentType": "application/pdf", "url": "http://x/a"}})]) == []
    assert issues(q, [answer("f", {"valueAttachment": {"contentType": "image/png", "url": "http://x/a"}})]) == []
    assert issues(q, [answer("f", {"valueAttachment": {"contentType": "text/plain", "url": "http://x/a"}})]) == [
        "qr-attachment-type"]


def test_max_size() -> None:
    q = [item("f", "attachment", ext("maxSize", valueDecimal=10))]
    small = base64.b64encode(b"12345").decode()
    big = base64.b64encode(b"x" * 11).decode()
    assert issues(q, [answer("f", {"valueAttachment": {"contentType": "text/plain", "data": small}})]) == []
    assert issues(q, [answer("f", {"valueAttachment": {"contentType": "text/plain", "data": big}})]) == [
        "qr-attachment-size"]
    assert issues(q, [answer("f", {"valueAttachment": {"url": "http://x/a", "size": 100}})]) == ["qr-attachment-size"]


def test_reference_resource_types() -> None:
    q = [item("r", "reference", ext("questionnaire-referenceResource", valueCode="Patient"),
              ext("questionnaire-referenceResource", valueCode="Practitioner"))]
    assert issues(q, [answer("r", {"valueReference": {"reference": "Patient/1"}})]) == []
    assert issues(q, [answer("r", {"valueReference": {"reference": "http://x.org/fhir/Practitioner/2"}})]) == []
    assert issues(q, [answer("r", {"valueReference": {"reference": "Observation/3"}})]) == ["ref-target-type"]
    # A contained target is judged by its resourceType.
    contained = {"contained": [{"resourceType": "Organization", "id": "o", "name": "x"}]}
    assert issues(q, [answer("r", {"valueReference": {"reference": "#o"}})], qr_extra=contained) == [
        "ref-target-type"]


# -- options and value sets -----------------------------------------------------------------


@pytest.mark.parametrize(("type_", "key", "good", "bad"), [
    ("integer", "valueInteger", 2, 3),
    ("date", "valueDate", "2020-01-01", "2020-01-02"),
    ("time", "valueTime", "10:00:00", "11:00:00"),
    ("string", "valueString", "red", "blue"),
    ("choice", "valueCoding", {"system": "http://x", "code": "a", "display": "A"}, {"system": "http://x", "code": "b"}),
    ("reference", "valueReference", {"reference": "Patient/1", "display": "P"}, {"reference": "Patient/2"}),
])
def test_answer_options_of_every_type(type_: str, key: str, good: Any, bad: Any) -> None:
    opts = [{key: {"system": "http://x", "code": "a"}} if key == "valueCoding" else
            {key: {"reference": "Patient/1"}} if key == "valueReference" else {key: good}]
    q = [item("o", type_, answerOption=opts)]
    assert issues(q, [answer("o", {key: good})]) == []
    assert issues(q, [answer("o", {key: bad})]) == ["qr-answer-not-in-options"]


def test_answer_value_set_contained() -> None:
    vs = {"resourceType": "ValueSet", "id": "colors", "status": "active",
          "compose": {"include": [{"system": "http://x", "concept": [{"code": "red"}, {"code": "green"}]}]}}
    q = [item("c", "choice", answerValueSet="#colors")]
    assert issues(q, [answer("c", {"valueCoding": {"system": "http://x", "code": "red"}})],
                  q_extra={"contained": [vs]}) == []
    assert issues(q, [answer("c", {"valueCoding": {"system": "http://x", "code": "blue"}})],
                  q_extra={"contained": [vs]}) == ["tx-code-not-in-valueset"]


# -- enableWhen -----------------------------------------------------------------------------


def _gated(operator: str, **answer_x: Any) -> list[dict[str, Any]]:
    return [item("a", "integer"),
            item("b", "string", required=True, enableWhen=[{"question": "a", "operator": operator, **answer_x}])]


@pytest.mark.parametrize(("operator", "limit", "value", "enabled"), [
    ("=", 5, 5, True), ("=", 5, 6, False),
    ("!=", 5, 6, True), ("!=", 5, 5, False),
    (">", 5, 6, True), (">", 5, 5, False),
    ("<", 5, 4, True), ("<", 5, 5, False),
    (">=", 5, 5, True), (">=", 5, 4, False),
    ("<=", 5, 5, True), ("<=", 5, 6, False),
])
def test_enable_when_operators(operator: str, limit: int, value: int, enabled: bool) -> None:
    # Enabled: b is required and missing (an error); disabled: b is not required, and an answer to it is an error.
    q = _gated(operator, answerInteger=limit)
    missing_b = issues(q, [answer("a", {"valueInteger": value})])
    answered_b = issues(q, [answer("a", {"valueInteger": value}), answer("b", {"valueString": "x"})])
    assert missing_b == (["qr-required-missing"] if enabled else [])
    assert answered_b == ([] if enabled else ["qr-disabled-answered"])


def test_enable_when_exists() -> None:
    q = _gated("exists", answerBoolean=True)
    assert issues(q, [answer("a", {"valueInteger": 1})]) == ["qr-required-missing"]
    assert issues(q, []) == []
    q = _gated("exists", answerBoolean=False)
    assert issues(q, []) == ["qr-required-missing"]


def test_enable_when_quantity_in_other_units() -> None:
    q = [item("w", "quantity"),
         item("b", "string", required=True, enableWhen=[
             {"question": "w", "operator": ">", "answerQuantity": {"value": 100, "system": UCUM, "code": "kg"}}])]
    heavy = [answer("w", {"valueQuantity": {"value": 150000, "system": UCUM, "code": "g"}})]
    light = [answer("w", {"valueQuantity": {"value": 50000, "system": UCUM, "code": "g"}})]
    assert issues(q, heavy) == ["qr-required-missing"]
    assert issues(q, light) == []


def test_enable_behavior_all_and_any() -> None:
    conds = [{"question": "a", "operator": "=", "answerBoolean": True},
             {"question": "c", "operator": "=", "answerBoolean": True}]
    base = [item("a", "boolean"), item("c", "boolean")]
    one = [answer("a", {"valueBoolean": True}), answer("c", {"valueBoolean": False})]
    both = [answer("a", {"valueBoolean": True}), answer("c", {"valueBoolean": True})]
    all_ = [*base, item("b", "string", required=True, enableWhen=conds, enableBehavior="all")]
    any_ = [*base, item("b", "string", required=True, enableWhen=conds, enableBehavior="any")]
    assert issues(all_, one) == []
    assert issues(all_, both) == ["qr-required-missing"]
    assert issues(any_, one) == ["qr-required-missing"]


def test_disabled_group_disables_its_children() -> None:
    q = [item("a", "boolean"),
         item("g", "group", enableWhen=[{"question": "a", "operator": "=", "answerBoolean": True}],
              item=[item("x", "string", required=True)])]
    assert issues(q, [answer("a", {"valueBoolean": False})]) == []
    assert issues(q, [answer("a", {"valueBoolean": True}), answer("g", item=[answer("x", {"valueString": "v"})])]) == []
    assert issues(q, [answer("a", {"valueBoolean": False}), answer("g", item=[answer("x", {"valueString": "v"})])]) == [
        "qr-disabled-answered"]


def test_enable_when_uses_the_nearest_occurrence_in_repeating_groups() -> None:
    q = [item("g", "group", repeats=True, item=[
        item("smoker", "boolean"),
        item("packs", "integer", required=True,
             enableWhen=[{"question": "smoker", "operator": "=", "answerBoolean": True}])])]
    response = [answer("g", item=[answer("smoker", {"valueBoolean": True}), answer("packs", {"valueInteger": 2})]),
                answer("g", item=[answer("smoker", {"valueBoolean": False})])]
    assert issues(q, response) == []
    wrong = [answer("g", item=[answer("smoker", {"valueBoolean": True})]),
             answer("g", item=[answer("smoker", {"valueBoolean": False}), answer("packs", {"valueInteger": 2})])]
    assert issues(q, wrong) == ["qr-disabled-answered", "qr-required-missing"]


# -- groups, nesting, status ----------------------------------------------------------------


def test_required_group_needs_content() -> None:
    q = [item("g", "group", required=True, item=[item("a", "string")])]
    assert issues(q, [answer("g", item=[answer("a", {"valueString": "x"})])]) == []
    assert issues(q, [answer("g")]) == ["qr-required-missing"]
    assert issues(q, []) == ["qr-required-missing"]


def test_items_nested_under_answers() -> None:
    q = [item("a", "boolean", item=[item("why", "string", ext("minLength", valueInteger=3), required=True)])]
    good = [answer("a", {"valueBoolean": True, "item": [answer("why", {"valueString": "because"})]})]
    short = [answer("a", {"valueBoolean": True, "item": [answer("why", {"valueString": "no"})]})]
    unknown = [answer("a", {"valueBoolean": True, "item": [answer("zzz", {"valueString": "no"})]})]
    assert issues(q, good) == []
    assert issues(q, short) == ["qr-answer-length"]
    assert issues(q, unknown) == ["qr-linkid-unknown", "qr-required-missing"]


def test_required_is_enforced_once_completed() -> None:
    q = [item("a", "string", required=True)]
    assert issues(q, [], status="completed") == ["qr-required-missing"]
    assert issues(q, [], status="amended") == ["qr-required-missing"]
    assert issues(q, [], status="in-progress") == []
