"""QuestionnaireResponse against its Questionnaire: https://hl7.org/fhir/R4/questionnaireresponse.html#link.

When ``QuestionnaireResponse.questionnaire`` resolves (a loaded or PUT Questionnaire, or a contained
one), the response must follow it, as the HL7 reference validator checks:

- every ``linkId`` exists in the Questionnaire at that level; an item that does not repeat appears
  once; groups and display items carry no answers; the abstract type ``question`` is never answerable;
- required items (``required``) are present with answers, and required groups have content — only
  while enabled, and as errors only once the response is ``completed`` or ``amended`` ("must be
  present in a 'completed' QuestionnaireResponse"); before that a gap is information;
- ``enableWhen`` with every operator (exists, =, !=, >, <, >=, <=; quantities in comparable
  units) over the answers of the nearest occurrence of its question, combined by ``enableBehavior``
  all/any; a disabled item disables everything below it, and a disabled item has no answers;
- more than one answer only when ``repeats``; SDC ``questionnaire-minOccurs``/``maxOccurs`` bound
  the answers of a question and the occurrences of a group; each answer has the type the item's
  type asks for (choice → Coding; open-choice → Coding or string; text → string ...);
- answers come from ``answerOption`` when it is given (every option type: integer, date, time,
  string, Coding by system and code, Reference by reference; ``optionExclusive`` options stand
  alone), and from ``answerValueSet`` when that is decidable locally (display names too);
- items nested under an answer follow the item's children;
- the constraints of :mod:`questionnaire_answers` on each answer value (minValue/maxValue,
  maxDecimalPlaces, minLength/maxLength, regex, mimeType, maxSize, referenceResource, units).

A canonical that resolves to something other than a Questionnaire is an error; one that does not
resolve at all is information only (the Questionnaire may live elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.code_syntax import plausible
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.questionnaire_answers import EXT, check_answer, ext_values, label
from fhir_exchange.validation.structure import Visited
from fhir_exchange.validation.terminology import Expansion, Terminology
from fhir_exchange.validation.values import compare, json_equal

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


def _answer_value(answer: dict[str, Any], prefix: str = "value") -> tuple[str | None, Any]:
    for k, v in answer.items():
        if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper():
            return k, v
    return None, None


# Response statuses in which an item marked ``required`` must be present (questionnaire.html#item:
# "must be present in a 'completed' QuestionnaireResponse"); in other states a gap is only noted.
_FINAL = frozenset({"completed", "amended"})

# enableWhen answer[x] suffix -> values.compare type code.
_ORDER_TYPE = {"Integer": "integer", "Decimal": "decimal", "Date": "date", "DateTime": "dateTime",
               "Time": "time", "Quantity": "Quantity"}


class _Ctx:
    def __init__(self, qr: dict[str, Any], q: dict[str, Any], sink: IssueSink) -> None:
        self.qr = qr
        self.q = q
        self.sink = sink
        status = qr.get("status")
        self.final = status is None or (isinstance(status, str) and status in _FINAL)
        self.contained = list(dicts(qr.get("contained")))
        # The response item lists enclosing the item being checked, outermost first: enableWhen
        # refers to the nearest occurrence of its question (Questionnaire.item.enableWhen.question).
        self.scopes: list[list[Any]] = []

    def answers_of(self, link: str) -> list[Any]:
        for scope in reversed(self.scopes):
            found: list[dict[str, Any]] = []
            _find(scope, link, found)
            if found:
                return [v for it in found for a in dicts(it.get("answer"))
                        for v in (_answer_value(a)[1],) if v is not None]
        return []

    def missing(self, code: str, message_id: str, diagnostics: str, path: str) -> None:
        """A required answer or item is absent: an error once the response is final."""
        if self.final:
            self.sink.error(code, message_id, diagnostics, path)
        else:
            self.sink.info(code, message_id, f"{diagnostics} (allowed while the response is "
                                             f"{self.qr.get('status')})", path)


def _find(items: Any, link: str, out: list[dict[str, Any]]) -> None:
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict):
            continue
        if it.get("linkId") == link:
            out.append(it)
        _find(it.get("item"), link, out)
        for a in dicts(it.get("answer")):
            _find(a.get("item"), link, out)


def _int_ext(d: dict[str, Any], name: str) -> int | None:
    for v in ext_values(d, EXT + name):
        if type(v) is int:
            return v
    return None


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
        self._items(qr.get("item"), q.get("item"), path, ctx, True)

    # -- items -------------------------------------------------------------------------------

    def _items(self, qr_items: Any, q_items: Any, path: str, ctx: _Ctx, parent_enabled: bool) -> None:
        """The response items of one level against the questionnaire items of that level; a disabled
        parent disables everything below it (Questionnaire.item.enableWhen)."""
        sink = ctx.sink
        # Malformed items (a linkId that is not a string...) are the structural pass's to report.
        defs = {d["linkId"]: d for d in q_items if isinstance(d, dict) and isinstance(d.get("linkId"), str)} \
            if isinstance(q_items, list) else {}
        items = qr_items if isinstance(qr_items, list) else []
        ctx.scopes.append(items)
        try:
            present: dict[str, list[dict[str, Any]]] = {}
            for i, it in enumerate(items):
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
                if len(present[link]) == 2 and not d.get("repeats"):
                    sink.error("structure", "qr-repeats",
                               f"Only one response item with linkId '{link}' is allowed (the item does not repeat)",
                               here)
                self._item(it, d, here, ctx, parent_enabled)
            for link, d in defs.items():
                enabled = parent_enabled and self._enabled(d, ctx)
                found = present.get(link, [])
                if d.get("type") == "group":
                    self._occurrences(d, len(found), enabled, path, "times", ctx)
                if not d.get("required") or not enabled or found:
                    continue
                ctx.missing("required", "qr-required-missing",
                            f"No response found for required item with linkId '{link}'", path)
        finally:
            ctx.scopes.pop()

    def _occurrences(self, d: dict[str, Any], n: int, enabled: bool, path: str, what: str, ctx: _Ctx) -> None:
        """SDC questionnaire-minOccurs / questionnaire-maxOccurs: how often a group appears, how many
        answers a question has."""
        link = d.get("linkId")
        most = _int_ext(d, "questionnaire-maxOccurs")
        if most is not None and n > most:
            ctx.sink.error("structure", "qr-max-occurs",
                           f"Item '{link}' occurs {n} {what}, more than its maxOccurs {most}", path)
        least = _int_ext(d, "questionnaire-minOccurs")
        # Not present and not required: minOccurs describes the item once it is answered at all.
        if least is not None and enabled and n < least and (n > 0 or d.get("required")):
            ctx.missing("required", "qr-min-occurs",
                        f"Item '{link}' occurs {n} {what}, fewer than its minOccurs {least}", path)

    def _item(self, it: dict[str, Any], d: dict[str, Any], path: str, ctx: _Ctx, parent_enabled: bool) -> None:
        sink = ctx.sink
        kind = d.get("type")
        link = d.get("linkId")
        answers = dicts(it.get("answer"))
        enabled = parent_enabled and self._enabled(d, ctx)
        if kind == "question":
            sink.error("structure", "qr-abstract-type",
                       f"Item '{link}' has the abstract type 'question' and cannot be answered", path)
            return
        if kind in ("group", "display"):
            if answers:
                sink.error("structure", "qr-answer-not-allowed",
                           f"Items of type {kind} cannot have answers (linkId '{link}')", path)
            if kind == "group":
                children = it.get("item")
                # "required groups must contain at least one child element" (Questionnaire.item.required)
                if d.get("required") and enabled and not children:
                    ctx.missing("required", "qr-required-missing", f"The required group '{link}' has no content",
                                path)
                self._items(children, d.get("item"), path, ctx, enabled)
            return
        if not answers and d.get("required") and enabled:
            ctx.missing("required", "qr-required-missing", f"No answer found for required item '{link}'", path)
        if len(answers) > 1 and not d.get("repeats"):
            sink.error("structure", "qr-repeats", f"Only one answer is allowed for item '{link}'", path)
        self._occurrences(d, len(answers), enabled, path, "times answered", ctx)
        if answers and not enabled:
            sink.error("structure", "qr-disabled-answered",
                       f"Item '{link}' is not enabled (enableWhen) but has answers", path)
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
                # Items nested under an answer belong to that answer (questionnaireresponse.html#item).
                ctx.scopes.append([it])
                try:
                    self._items(a["item"], d.get("item"), here, ctx, enabled)
                finally:
                    ctx.scopes.pop()
        if exclusive and len(answers) > 1:
            sink.error("structure", "qr-option-exclusive",
                       f"An exclusive option was chosen for item '{link}' together with other answers", path)
        if it.get("item"):
            self._items(it["item"], d.get("item"), path, ctx, enabled)

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
                               f"The answer {label(value)} is not one of the allowed options", path)
            elif any(v is True for v in ext_values(match, EXT + "questionnaire-optionExclusive")):
                exclusive = True
        vs = d.get("answerValueSet")
        if isinstance(vs, str):
            self._value_set(vs, key, value, d, path, ctx)
        check_answer(key, value, d, path, sink, lambda url: self._expand(url, ctx), ctx.contained)
        return exclusive

    def _value_set(self, vs: str, key: str, value: Any, d: dict[str, Any], path: str, ctx: _Ctx) -> None:
        sink = ctx.sink
        exp = self._expand(vs, ctx)
        if exp is None:
            sink.warning("not-found", MsgId.VALUESET_UNKNOWN,
                         f"The answer value set {vs} is not available; the answer was not checked", path)
            return
        if key == "valueString" and isinstance(value, str) and d.get("type") != "open-choice":
            # A string answer to an item with an answer value set is one of its codes (open-choice
            # alone admits free text besides them).
            if _member(exp, None, value) is False:
                sink.error("code-invalid", MsgId.CODE_NOT_IN_VALUESET,
                           f"The value '{value}' is not in the list of allowed values (value set {vs})", path)
            return
        if key != "valueCoding" or not isinstance(value, dict):
            return
        code = value.get("code")
        if not isinstance(code, str):
            return
        system = value.get("system") if isinstance(value.get("system"), str) else None
        verdict = _member(exp, system, code)
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
        """One enableWhen: with no answer only ``exists`` can hold (as the HL7 validator evaluates)."""
        answers = ctx.answers_of(str(c.get("question")))
        op = c.get("operator")
        key, expected = _answer_value(c, "answer")
        if key is None:
            return False
        if op == "exists":
            return bool(answers) == bool(expected)
        suffix = key[6:]  # answerDecimal -> Decimal
        type_code = _ORDER_TYPE.get(suffix)
        for a in answers:
            if op == "=" and _same_answer(key, a, expected):
                return True
            if op == "!=" and not _same_answer(key, a, expected):
                return True
            if op in ("<", ">", "<=", ">="):
                if type_code is not None:
                    r = compare(type_code, a, expected)
                elif suffix == "String" and isinstance(a, str) and isinstance(expected, str):
                    r = (a > expected) - (a < expected)
                else:
                    r = None
                if r is not None and {"<": r < 0, ">": r > 0, "<=": r <= 0, ">=": r >= 0}[op]:
                    return True
        return False


def _member(exp: Expansion, system: str | None, code: str) -> bool | None:
    """Membership as far as decidable: codes of systems that cannot be expanded here are still
    judged by their syntax (code_syntax), so "Australia" is no ISO 3166 code."""
    verdict = exp.contains(system, code)
    if verdict is not None or exp.all_open:
        return verdict
    candidates = [system] if system is not None else sorted(exp.open_systems)
    if any(plausible(s, code) is not False for s in candidates):
        return None
    return False


def _same_answer(key: str, a: Any, b: Any) -> bool:
    if key.endswith("Coding") and isinstance(a, dict) and isinstance(b, dict):
        return a.get("system") == b.get("system") and a.get("code") == b.get("code")
    if key.endswith("Reference") and isinstance(a, dict) and isinstance(b, dict) and "reference" in b:
        return a.get("reference") == b.get("reference")
    if key.endswith("Quantity") and isinstance(a, dict) and isinstance(b, dict):
        return compare("Quantity", a, b) == 0
    return json_equal(a, b)
