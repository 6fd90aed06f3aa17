"""Types: http://hl7.org/fhirpath/N1/#types (``is``, ``as``), ``ofType()``
http://hl7.org/fhirpath/N1/#oftypetype-type-specifier-collection and ``type()``
http://hl7.org/fhirpath/N1/#reflection, on the FHIR R4 type model.
"""

from __future__ import annotations

from typing import Any

from fhirpathpy.engine.nodes import TypeInfo

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.items import single_item, str_param
from fhir_exchange.fhir.fhirpath.values import FHIR_TYPES, SYSTEM_TYPES, fhir_type_name, is_subtype


def check_type_name(spec: TypeInfo) -> None:
    # Unknown names are errors (as(string1)); System.Patient is a valid name no value has.
    if spec.namespace == "System":
        return
    known = FHIR_TYPES if spec.namespace == "FHIR" else SYSTEM_TYPES | FHIR_TYPES
    if spec.name not in known:
        raise FhirPathEvaluationError(f"unknown type {spec.namespace or ''}{'.' if spec.namespace else ''}{spec.name}")


def type_matches(item: Any, spec: TypeInfo, inherit: bool) -> bool:
    actual = fhir_type_name(item)
    if actual is None:
        return False
    namespace, name = actual
    if spec.namespace is not None and spec.namespace != namespace:
        return False
    if namespace == "System":
        return name == spec.name or spec.name == "Any"
    return name == spec.name or (inherit and is_subtype(name, spec.name))


def _is(ctx: Any, data: list[Any], spec: TypeInfo) -> list[bool]:
    check_type_name(spec)
    if not data:
        return []
    return [type_matches(single_item(data, "operand of 'is'"), spec, inherit=True)]


def _as_function(ctx: Any, data: list[Any], spec: TypeInfo) -> list[Any]:
    # The function form filters a collection: the R4 core invariant dom-3 applies
    # descendants().as(canonical) to many items (HAPI's R4 engine does the same). The operator
    # form below keeps the spec's singleton rule.
    check_type_name(spec)
    return [x for x in data if type_matches(x, spec, inherit=False)]


def _as_operator(ctx: Any, data: list[Any], spec: TypeInfo) -> list[Any]:
    check_type_name(spec)
    if not data:
        return []
    item = single_item(data, "operand of 'as'")
    return [item] if type_matches(item, spec, inherit=False) else []


def _of_type(ctx: Any, data: list[Any], spec: TypeInfo) -> list[Any]:
    check_type_name(spec)
    return [x for x in data if type_matches(x, spec, inherit=False)]


def _type_filter(ctx: Any, data: list[Any], name: Any) -> list[Any]:
    """The leading ``Patient`` of ``Patient.name``: keep items of that type (or a subtype).

    Items whose type is unknown (an element passed without ``context_path``) are kept: the
    expression's author named the type, and we cannot tell otherwise.
    """
    type_name = str_param(name) or ""
    out = []
    for item in data:
        actual = fhir_type_name(item)
        if actual is None or actual[1] == type_name or (actual[0] == "FHIR" and is_subtype(actual[1], type_name)):
            out.append(item)
    return out


def _type(ctx: Any, data: list[Any]) -> list[dict[str, str]]:
    out = []
    for item in data:
        t = fhir_type_name(item)
        if t is not None:
            out.append({"namespace": t[0], "name": t[1]})
    return out


ENTRIES: dict[str, dict[str, Any]] = {
    "isOp": {"fn": _is, "arity": {2: ["Any", "TypeSpecifier"]}},
    "asOp": {"fn": _as_operator, "arity": {2: ["Any", "TypeSpecifier"]}},
    "is": {"fn": _is, "arity": {1: ["TypeSpecifier"]}},
    "as": {"fn": _as_function, "arity": {1: ["TypeSpecifier"]}},
    "ofType": {"fn": _of_type, "arity": {1: ["TypeSpecifier"]}},
    "type": {"fn": _type},
    # internal, inserted by the compile step for a type name used as a path step
    "__typeFilter": {"fn": _type_filter, "arity": {1: ["Any"]}},
}
