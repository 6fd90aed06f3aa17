"""QuestionnaireResponse against its Questionnaire: https://hl7.org/fhir/R4/questionnaireresponse.html#link."""

from __future__ import annotations

from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator

Q_URL = "http://example.org/Questionnaire/q"
EXT = "http://hl7.org/fhir/StructureDefinition/"


def check(items: list[dict[str, Any]], answers: list[dict[str, Any]]) -> list[str | None]:
    q = {"resourceType": "Questionnaire", "url": Q_URL, "status": "active", "item": items}
    qr: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "questionnaire": Q_URL, "status": "completed",
                          "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    if answers:
        qr["item"] = answers
    v = Validator(Definitions.load(), fetch_canonical={Q_URL: q}.get)
    return [i.message_id for i in v.validate(qr) if i.severity == "error"]


def item(link: str, type_: str, **kw: Any) -> dict[str, Any]:
    return {"linkId": link, "type": type_, **kw}


def answer(link: str, *values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"linkId": link, **kw}
    if values:
        out["answer"] = list(values)
    return out


def test_clean_response() -> None:
    assert check([item("a", "string", required=True)], [answer("a", {"valueString": "x"})]) == []


def test_unknown_link_id() -> None:
    assert check([item("a", "string")], [answer("b", {"valueString": "x"})]) == ["qr-linkid-unknown"]


def test_required_missing_and_unanswered() -> None:
    assert check([item("a", "string", required=True)], []) == ["qr-required-missing"]
    assert check([item("a", "string", required=True)], [answer("a")]) == ["qr-required-missing"]


def test_required_only_while_enabled() -> None:
    items = [item("a", "boolean"),
             item("b", "string", required=True,
                  enableWhen=[{"question": "a", "operator": "=", "answerBoolean": True}])]
    assert check(items, [answer("a", {"valueBoolean": False})]) == []
    assert check(items, [answer("a", {"valueBoolean": True})]) == ["qr-required-missing"]


def test_answer_type_must_match_item_type() -> None:
    assert check([item("a", "integer")], [answer("a", {"valueString": "1"})]) == ["qr-answer-type"]


def test_repeats() -> None:
    assert check([item("a", "string")], [answer("a", {"valueString": "x"}, {"valueString": "y"})]) == [
        "qr-repeats"]


def test_group_and_display_take_no_answers() -> None:
    assert check([item("g", "group", item=[item("a", "string")])], [answer("g", {"valueString": "x"})]) == [
        "qr-answer-not-allowed"]
    assert check([item("d", "display")], [answer("d", {"valueString": "x"})]) == ["qr-answer-not-allowed"]


def test_answer_options_and_exclusive() -> None:
    opts = [{"valueCoding": {"system": "http://x", "code": "a"}},
            {"valueCoding": {"system": "http://x", "code": "none"},
             "extension": [{"url": EXT + "questionnaire-optionExclusive", "valueBoolean": True}]}]
    items = [item("c", "choice", repeats=True, answerOption=opts)]
    a = {"valueCoding": {"system": "http://x", "code": "a"}}
    none = {"valueCoding": {"system": "http://x", "code": "none"}}
    other = {"valueCoding": {"system": "http://x", "code": "zzz"}}
    assert check(items, [answer("c", a)]) == []
    assert check(items, [answer("c", other)]) == ["qr-answer-not-in-options"]
    assert check(items, [answer("c", a, none)]) == ["qr-option-exclusive"]


def test_answer_value_set() -> None:
    items = [item("g", "choice", answerValueSet="http://hl7.org/fhir/ValueSet/administrative-gender")]
    ok = {"valueCoding": {"system": "http://hl7.org/fhir/administrative-gender", "code": "male"}}
    bad = {"valueCoding": {"system": "http://hl7.org/fhir/administrative-gender", "code": "man"}}
    assert check(items, [answer("g", ok)]) == []
    assert check(items, [answer("g", bad)]) == ["tx-code-not-in-valueset"]


def test_min_max_and_decimal_places() -> None:
    items = [item("n", "decimal", extension=[{"url": EXT + "minValue", "valueDecimal": 1},
                                              {"url": EXT + "maxDecimalPlaces", "valueInteger": 1}])]
    assert check(items, [answer("n", {"valueDecimal": 1.5})]) == []
    assert check(items, [answer("n", {"valueDecimal": 0.5})]) == ["qr-answer-range"]
    assert check(items, [answer("n", {"valueDecimal": 1.25})]) == ["qr-answer-decimals"]


def test_quantity_limits_convert_units() -> None:
    sdc = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
    km = {"system": "http://unitsofmeasure.org", "code": "km"}
    items = [item("d", "quantity", extension=[{"url": sdc + "sdc-questionnaire-maxQuantity",
                                               "valueQuantity": {"value": 5, **km}}])]
    meters = {"system": "http://unitsofmeasure.org", "code": "m"}
    assert check(items, [answer("d", {"valueQuantity": {"value": 4000, **meters}})]) == []
    assert check(items, [answer("d", {"valueQuantity": {"value": 6000, **meters}})]) == ["qr-answer-range"]
    kg = {"system": "http://unitsofmeasure.org", "code": "kg"}
    assert check(items, [answer("d", {"valueQuantity": {"value": 1, **kg}})]) == ["qr-answer-units"]


def test_questionnaire_reference_to_another_type() -> None:
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed",
          "questionnaire": "http://hl7.org/fhir/ValueSet/administrative-gender"}
    found = [i.message_id for i in Validator(Definitions.load()).validate(qr) if i.severity == "error"]
    assert found == ["ref-target-type"]


def test_unknown_questionnaire_is_not_an_error() -> None:
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": "http://nowhere/Q/1"}
    assert [i for i in Validator(Definitions.load()).validate(qr) if i.severity == "error"] == []
