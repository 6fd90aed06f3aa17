"""Binding checks: https://hl7.org/fhir/R4/terminologies.html#strength.

required: a code outside the ValueSet is an error; extensible: a warning (the spec lets another
code stand in only when no suitable code exists, which a machine cannot judge). A CodeableConcept
satisfies a binding when any of its codings does. Codes the local terminology cannot decide (see
:mod:`terminology`) are reported once, as information, so a tester sees what was not checked.
"""

from __future__ import annotations

from typing import Any, Final

from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.schema import Binding
from fhir_exchange.validation.terminology import Terminology

UCUM: Final = "http://unitsofmeasure.org"


def check_binding(tx: Terminology, binding: Binding, type_code: str, value: Any, path: str,
                  sink: IssueSink) -> None:
    vs = binding.value_set
    if not vs or not value:
        return
    strength = binding.strength
    if tx.expand(vs) is None:
        # The ValueSet itself is missing: say so once, never block on it.
        sink.warning("not-found", MsgId.VALUESET_UNKNOWN,
                     f"The {strength} binding's ValueSet {vs} is not available; codes were not checked", path)
        return
    if type_code in ("code", "string", "uri"):
        if type(value) is str:
            _one(tx, binding, None, value, path, sink)
        return
    if type(value) is not dict:
        return
    if type_code in ("Coding", "Quantity"):
        if _well_formed(value):
            _one(tx, binding, value.get("system"), value["code"], path, sink)
        return
    if type_code == "CodeableConcept":
        coding = value.get("coding")
        if coding is not None and type(coding) is not list:
            return  # a shape error, reported by the structural walk
        codings = [c for c in coding or () if _well_formed(c)]
        if not codings:
            if strength == "required" and value.get("coding") is None:
                sink.add("error", "code-invalid", MsgId.CODE_MISSING,
                         f"No code provided, and a code is required from the value set {vs}", path)
            return
        verdicts = [tx.validate_code(vs, c.get("system"), c["code"]) for c in codings]
        if any(v.valid for v in verdicts):
            return
        unverified = [v for v in verdicts if v.valid is None]
        if unverified:
            sink.info("informational", MsgId.CODE_UNVERIFIED, unverified[0].message, path)
            return
        labels = ", ".join(f"{c.get('system')}#{c['code']}" for c in codings)
        _fail(strength, f"None of the codings provided ({labels}) are in the value set {vs}", path, sink)


def _well_formed(c: Any) -> bool:
    # Malformed codings are the structural walk's to report; terminology looks at well-formed ones only.
    return (type(c) is dict and type(c.get("code")) is str
            and (c.get("system") is None or type(c.get("system")) is str))


def _one(tx: Terminology, binding: Binding, system: str | None, code: str, path: str, sink: IssueSink) -> None:
    verdict = tx.validate_code(binding.value_set or "", system, code)
    if verdict.valid:
        return
    if verdict.valid is None:
        sink.info("informational", MsgId.CODE_UNVERIFIED, verdict.message, path)
        return
    _fail(binding.strength, verdict.message, path, sink)


def _fail(strength: str, message: str, path: str, sink: IssueSink) -> None:
    if strength == "required":
        sink.error("code-invalid", MsgId.CODE_NOT_IN_VALUESET, message, path)
    elif strength == "extensible":
        sink.warning("code-invalid", MsgId.CODE_NOT_IN_VALUESET_EXTENSIBLE, message, path)
