"""QuestionnaireResponse against its Questionnaire: https://hl7.org/fhir/R4/questionnaireresponse.html#link.

When ``QuestionnaireResponse.questionnaire`` resolves (a loaded or PUT Questionnaire, or a contained
one), the response must follow it, as the HL7 reference validator checks:

- every ``linkId`` exists in the Questionnaire at that level; groups and display items carry no
  answers; the abstract type ``question`` is never answerable;
- required items (``required``) are present with answers — only while enabled: ``enableWhen`` is
  evaluated over the response's answers with ``enableBehavior`` all/any;
- more than one answer only when ``repeats``; each answer has the type the item's type asks for
  (choice → Coding; open-choice → Coding or string; text → string ...);
- answers come from ``answerOption`` when it is given (``optionExclusive`` options stand alone),
  and from ``answerValueSet`` when that is decidable locally (display names too);
- the item extensions ``minValue``/``maxValue``, ``maxDecimalPlaces``, ``minLength``,
  ``questionnaire-unitOption``, ``questionnaire-unitValueSet`` and SDC ``minQuantity``/``maxQuantity``
  (units compared through :mod:`ucum`).

A canonical that resolves to something other than a Questionnaire is an error; one that does not
resolve at all is information only (the Questionnaire may live elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.structure import Visited
from fhir_exchange.validation.terminology import Expansion, Terminology
from fhir_exchange.validation.ucum import compare_quantities
from fhir_exchange.validation.values import compare, json_equal

EXT = "http://hl7.org/fhir/StructureDefinition/"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"

ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime", "valueDate"),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    # The reference validator accepts a string answer to a choice item (validator case
    # choice-invalid-type): R4 choice lists may be open in practice.
    "choice": ("valueCoding", "valueString"),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}


def _ext(item: dict[str, Any], url: str) -> list[Any]:
    out = []
    for e in dicts(item.get("extension")):
        if e.get("url") == url:
            out.append(next((v for k, v in e.items() if k.startswith("value")), None))
    return out


def _answer_value(answer: dict[str, Any], prefix: str = "value") -> tuple[str | None, Any]:
    for k, v in answer.items():
        if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper():
            return k, v
    return None, None


class _Ctx:
    def __init__(self, qr: dict[str, Any], q: dict[str, Any], sink: IssueSink) -> None:
        self.qr = qr
        self.q = q
        self.sink = sink
        self.answers: dict[str, list[Any]] = {}
        self._collect(qr.get("item"))

    def _collect(self, items: Any) -> None:
        for it in items if isinstance(items, list) else []:
            if not isinstance(it, dict):
                continue
            for a in dicts(it.get("answer")):
                _, v = _answer_value(a)
                if v is not None:
                    self.answers.setdefault(str(it.get("linkId")), []).append(v)
                self._collect(a.get("item"))
            self._collect(it.get("item"))


class QuestionnaireChecker:
    def __init__(self, definitions: Definitions, terminology: Terminology,
                 fetch: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        self.defs = definitions
        self.tx = terminology
        self.fetch = fetch

    def check(self, resources: list[Visited], sink: IssueSink) -> None:
        for v in resources:
            if v.node.get("resourceType") == "QuestionnaireResponse":
                self._response(v.node, v.path, sink)

    def _response(self, qr: dict[str, Any], path: str, sink: IssueSink) -> None:
        canonical = qr.get("questionnaire")
        if not isinstance(canonical, str):
            return
        if canonical.startswith("#"):
            q = next((c for c in dicts(qr.get("contained")) if c.get("id") == canonical[1:]), None)
        else:
            q = self.defs.resolve(canonical)
            if q is None and self.fetch is not None:
                q = self.fetch(canonical)
            if q is None and "|" in canonical:
                q = self.defs.resolve(canonical.partition("|")[0])
        if q is None:
            sink.info("not-found", MsgId.PROFILE_UNKNOWN,
                      f"The questionnaire {canonical} could not be found, so the response was not checked against "
                      "it", f"{path}.questionnaire")
            return
        if q.get("resourceType") != "Questionnaire":
            sink.error("invalid", MsgId.REFERENCE_TARGET_TYPE,
                       f"The questionnaire reference {canonical} resolves to a {q.get('resourceType')}, not a "
                       "Questionnaire", f"{path}.questionnaire")
            return
        ctx = _Ctx(qr, q, sink)
        self._items(qr.get("item"), q.get("item"), path, ctx)

    # -- items -------------------------------------------------------------------------------

    def _items(self, qr_items: Any, q_items: Any, path: str, ctx: _Ctx) -> None:
        sink = ctx.sink
        # Malformed items (a linkId that is not a string...) are the structural pass's to report.
        defs = {d["linkId"]: d for d in q_items if isinstance(d, dict) and isinstance(d.get("linkId"), str)} \
            if isinstance(q_items, list) else {}
        present: dict[str, list[dict[str, Any]]] = {}
        for i, it in enumerate(qr_items if isinstance(qr_items, list) else []):
            if not isinstance(it, dict) or not isinstance(it.get("linkId"), str):
                continue
            here = f"{path}.item[{i}]"
            link = it["linkId"]
            d = defs.get(link)
            if d is None:
                sink.error("structure", "qr-linkid-unknown",
                           f"No item with linkId '{link}' at this level of the questionnaire", here)
                continue
            present.setdefault(link, []).append(it)
            self._item(it, d, here, ctx)
        for link, d in defs.items():
            if not d.get("required") or not self._enabled(d, ctx):
                continue
            found = present.get(link)
            if not found:
                sink.error("required", "qr-required-missing",
                           f"No response found for required item with linkId '{link}'", path)

    def _item(self, it: dict[str, Any], d: dict[str, Any], path: str, ctx: _Ctx) -> None:
        sink = ctx.sink
        kind = d.get("type")
        answers = dicts(it.get("answer"))
        enabled = self._enabled(d, ctx)
        if kind == "question":
            sink.error("structure", "qr-abstract-type",
                       f"Item '{d.get('linkId')}' has the abstract type 'question' and cannot be answered", path)
            return
        if kind in ("group", "display"):
            if answers:
                sink.error("structure", "qr-answer-not-allowed",
                           f"Items of type {kind} cannot have answers (linkId '{d.get('linkId')}')", path)
            if kind == "group":
                children = it.get("item")
                if d.get("required") and enabled and not children:
                    sink.error("required", "qr-required-missing",
                               f"The required group '{d.get('linkId')}' has no content", path)
                self._items(children, d.get("item"), path, ctx)
            return
        if not answers and d.get("required") and enabled:
            sink.error("required", "qr-required-missing",
                       f"No answer found for required item '{d.get('linkId')}'", path)
        if len(answers) > 1 and not d.get("repeats"):
            sink.error("structure", "qr-repeats",
                       f"Only one answer is allowed for item '{d.get('linkId')}'", path)
        if answers and not enabled:
            sink.error("structure", "qr-disabled-answered",
                       f"Item '{d.get('linkId')}' is not enabled (enableWhen) but has answers", path)
        exclusive = False
        for j, a in enumerate(answers):
            here = f"{path}.answer[{j}]"
            key, value = _answer_value(a)
            allowed = ANSWER_TYPES.get(str(kind), ())
            if key is not None and allowed and key not in allowed:
                sink.error("structure", "qr-answer-type",
                           f"Answer value must be of type {' or '.join(k[5:] for k in allowed)} for an item of "
                           f"type {kind}, not {key[5:]}", here)
                continue
            if key is None:
                continue
            exclusive |= self._answer(key, value, d, here, ctx)
            if a.get("item"):
                self._items(a["item"], d.get("item"), here, ctx)
        if exclusive and len(answers) > 1:
            sink.error("structure", "qr-option-exclusive",
                       f"An exclusive option was chosen for item '{d.get('linkId')}' together with other answers",
                       path)
        if it.get("item"):
            self._items(it["item"], d.get("item"), path, ctx)

    def _answer(self, key: str, value: Any, d: dict[str, Any], path: str, ctx: _Ctx) -> bool:
        """Checks one answer; True when it picked an exclusive option."""
        sink = ctx.sink
        exclusive = False
        options = dicts(d.get("answerOption"))
        if options:
            match = None
            for o in options:
                okey, ovalue = _answer_value(o)
                if okey == key and _same_answer(key, value, ovalue):
                    match = o
                    break
            if match is None:
                if not (d.get("type") == "open-choice" and key == "valueString"):
                    sink.error("code-invalid", "qr-answer-not-in-options",
                               f"The answer {_label(value)} is not one of the allowed options", path)
            elif any(v is True for v in _ext(match, EXT + "questionnaire-optionExclusive")):
                exclusive = True
        vs = d.get("answerValueSet")
        if isinstance(vs, str):
            self._value_set(vs, key, value, d, path, ctx)
        limits = (("minValue", -1, "less than"), ("maxValue", 1, "greater than"))
        for ext, sign, word in limits:
            for limit in _ext(d, EXT + ext):
                c = compare(key[5:][0].lower() + key[6:], value, limit)
                if c == sign:
                    sink.error("value", "qr-answer-range", f"The answer {_label(value)} is {word} {limit}", path)
        for places in _ext(d, EXT + "maxDecimalPlaces"):
            if key == "valueDecimal" and isinstance(places, int) and _decimals(value) > places:
                sink.error("value", "qr-answer-decimals",
                           f"The answer {value} has more than {places} decimal places", path)
        for length in _ext(d, EXT + "minLength"):
            if isinstance(value, str) and isinstance(length, int) and len(value) < length:
                sink.error("value", "qr-answer-length", f"The answer is shorter than {length} characters", path)
        max_length = d.get("maxLength")
        if isinstance(value, str) and isinstance(max_length, int) and len(value) > max_length:
            sink.error("value", "qr-answer-length", f"The answer is longer than {max_length} characters", path)
        if key == "valueQuantity" and isinstance(value, dict):
            self._quantity(value, d, path, ctx)
        return exclusive

    def _value_set(self, vs: str, key: str, value: Any, d: dict[str, Any], path: str, ctx: _Ctx) -> None:
        sink = ctx.sink
        exp = self._expand(vs, ctx)
        if exp is None:
            sink.warning("not-found", MsgId.VALUESET_UNKNOWN,
                         f"The answer value set {vs} is not available; the answer was not checked", path)
            return
        if key != "valueCoding" or not isinstance(value, dict):
            return  # strings against a value set need a terminology server (display search)
        code = value.get("code")
        if not isinstance(code, str):
            return
        system = value.get("system") if isinstance(value.get("system"), str) else None
        verdict = exp.contains(system, code)
        if verdict is False:
            sink.error("code-invalid", MsgId.CODE_NOT_IN_VALUESET,
                       f"The code {system}#{code} is not in the answer value set {vs}", path)
        elif verdict is None:
            sink.info("informational", MsgId.CODE_UNVERIFIED,
                      f"The code {system}#{code} could not be verified against {vs}", path)
        else:
            display = value.get("display")
            expected = exp.codes.get(system or "", {}).get(code) if system else None
            if isinstance(display, str) and expected and display.strip().lower() != expected.strip().lower():
                sink.error("code-invalid", "qr-answer-display",
                           f"The display '{display}' for {system}#{code} should be '{expected}'", path)

    def _expand(self, vs: str, ctx: _Ctx) -> Expansion | None:
        if vs.startswith("#"):
            for holder in (ctx.q, ctx.qr):
                for c in dicts(holder.get("contained")):
                    if c.get("resourceType") == "ValueSet" and c.get("id") == vs[1:]:
                        return self.tx.expand_resource(c)
            return None
        return self.tx.expand(vs)

    def _quantity(self, q: dict[str, Any], d: dict[str, Any], path: str, ctx: _Ctx) -> None:
        sink = ctx.sink
        options = [o for o in _ext(d, EXT + "questionnaire-unitOption") if isinstance(o, dict)]
        if options and not any(o.get("system") == q.get("system") and o.get("code") == q.get("code")
                               for o in options):
            sink.error("code-invalid", "qr-unit-option",
                       f"The unit {q.get('system')}#{q.get('code')} is not one of the allowed unit options", path)
        for vs in _ext(d, EXT + "questionnaire-unitValueSet"):
            if not isinstance(vs, str):
                continue
            if not isinstance(q.get("code"), str):
                sink.error("code-invalid", "qr-unit-missing",
                           "The quantity has no unit code, but the item requires one from a value set", path)
                continue
            exp = self._expand(vs, ctx)
            if exp is not None and exp.contains(q.get("system"), q["code"]) is False:
                sink.error("code-invalid", MsgId.CODE_NOT_IN_VALUESET,
                           f"The unit {q.get('system')}#{q['code']} is not in the value set {vs}", path)
        for ext, sign, word in ((SDC + "sdc-questionnaire-minQuantity", -1, "less than"),
                                (SDC + "sdc-questionnaire-maxQuantity", 1, "greater than")):
            for limit in _ext(d, ext):
                if not isinstance(limit, dict):
                    continue
                try:
                    a, b = Decimal(str(q.get("value"))), Decimal(str(limit.get("value")))
                except InvalidOperation:
                    continue
                c = compare_quantities(a, str(q.get("code")), b, str(limit.get("code")))
                if c is None:
                    sink.error("value", "qr-answer-units",
                               f"The quantity's unit {q.get('code')} cannot be compared with the limit's unit "
                               f"{limit.get('code')}", path)
                elif c == sign:
                    sink.error("value", "qr-answer-range",
                               f"The quantity {q.get('value')} {q.get('code')} is {word} {limit.get('value')} "
                               f"{limit.get('code')}", path)

    # -- enableWhen --------------------------------------------------------------------------

    def _enabled(self, d: dict[str, Any], ctx: _Ctx) -> bool:
        conditions = dicts(d.get("enableWhen"))
        if not conditions:
            return True
        results = [self._condition(c, ctx) for c in conditions]
        if d.get("enableBehavior") == "all":
            return all(results)
        return any(results)

    def _condition(self, c: dict[str, Any], ctx: _Ctx) -> bool:
        answers = ctx.answers.get(str(c.get("question")), [])
        op = c.get("operator")
        key, expected = _answer_value(c, "answer")
        if key is None:
            return False
        if op == "exists":
            return bool(answers) == bool(expected)
        type_code = key[6].lower() + key[7:]  # answerDecimal -> decimal
        for a in answers:
            if op == "=" and _same_answer(key, a, expected):
                return True
            if op == "!=" and not _same_answer(key, a, expected):
                return True
            if op in ("<", ">", "<=", ">="):
                r = compare(type_code, a, expected)
                if r is not None and {"<": r < 0, ">": r > 0, "<=": r <= 0, ">=": r >= 0}[op]:
                    return True
        return False


def _same_answer(key: str, a: Any, b: Any) -> bool:
    if key.endswith("Coding") and isinstance(a, dict) and isinstance(b, dict):
        return a.get("system") == b.get("system") and a.get("code") == b.get("code")
    return json_equal(a, b)


def _decimals(value: Any) -> int:
    text = repr(value) if isinstance(value, float) else str(value)
    if "e" in text.lower():
        exponent = Decimal(text).as_tuple().exponent  # an int: NaN and Infinity have no "e"
        return abs(exponent) if isinstance(exponent, int) else 0
    return len(text.partition(".")[2])


def _label(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('system')}#{value.get('code')}" if "code" in value else str(value)
    return repr(value)
