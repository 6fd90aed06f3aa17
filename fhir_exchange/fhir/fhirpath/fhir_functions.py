"""The FHIR-specific functions: https://hl7.org/fhir/R4/fhirpath.html#functions.

``extension()``, ``hasValue()``, ``getValue()``, ``resolve()``, ``conformsTo()``, ``memberOf()``,
``htmlChecks()``, ``checkModifiers()``; ``elementDefinition()``, ``slice()``, ``subsumes()`` and
``subsumedBy()`` are known but raise "not supported".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.fhir.fhirpath.environment import call_hook, env_of
from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.html import html_checks
from fhir_exchange.fhir.fhirpath.items import single_item, single_value, str_param
from fhir_exchange.fhir.fhirpath.values import FHIR_TYPES, data_of, fhir_type_name, is_subtype, system_value

_CORE_SD = "http://hl7.org/fhir/StructureDefinition/"


def _has_value(ctx: Any, data: list[Any]) -> list[bool]:
    if len(data) != 1:
        return [False]
    item = data[0]
    if isinstance(item, ResourceNode):
        return [item.data is not None and not isinstance(item.data, Mapping | list)]
    return [item is not None and not isinstance(item, Mapping | list)]


def _get_value(ctx: Any, data: list[Any]) -> list[Any]:
    if _has_value(ctx, data) != [True]:
        return []
    return [system_value(data[0])]


def _extensions_of(item: Any) -> list[Any]:
    holder = item
    if isinstance(item, ResourceNode):
        # a merged primitive keeps its "_name" object in _data (see collapse())
        holder = item.data if isinstance(item.data, Mapping) else item._data
    if not isinstance(holder, Mapping):
        return []
    extensions = holder.get("extension")
    return extensions if isinstance(extensions, list) else []


def _extension(ctx: Any, data: list[Any], url: Any) -> list[Any]:
    wanted = str_param(url)
    if wanted is None:
        return []
    out = []
    for item in data:
        base = item.propName if isinstance(item, ResourceNode) and item.propName else "$"
        for i, ext in enumerate(_extensions_of(item)):
            if isinstance(ext, Mapping) and ext.get("url") == wanted:
                out.append(ResourceNode(ext, "Extension", propName=f"{base}.extension[{i}]", index=i))
    return out


def _has_extension(ctx: Any, data: list[Any], url: Any) -> list[bool]:
    return [bool(_extension(ctx, data, url))]


def _reference_of(item: Any) -> str | None:
    data = data_of(item)
    if isinstance(data, Mapping):
        ref = data.get("reference")
        return ref if isinstance(ref, str) else None
    return data if isinstance(data, str) else None


def _resolve(ctx: dict[str, Any], data: list[Any]) -> list[Any]:
    env = env_of(ctx)
    out = []
    for item in data:
        ref = _reference_of(item)
        if not ref:
            continue
        target = env.resolve(ref)
        if target is not None:
            out.append(ResourceNode.create_node(target))
    return out


def _resource_of(item: Any) -> Mapping[str, Any] | None:
    data = data_of(item)
    return data if isinstance(data, Mapping) and "resourceType" in data else None


def _conforms_to(ctx: dict[str, Any], data: list[Any], url: Any) -> list[bool]:
    target = str_param(url)
    item = single_item(data)
    if item is None or target is None:
        return []
    resource = _resource_of(item)
    hook = env_of(ctx).conforms_to
    if hook is not None and resource is not None:
        return [bool(call_hook(hook, resource, target))]
    if resource is not None and target in (resource.get("meta") or {}).get("profile", ()):
        return [True]
    if target.startswith(_CORE_SD) and target[len(_CORE_SD) :] in FHIR_TYPES:
        actual = fhir_type_name(item)
        return [actual is not None and is_subtype(actual[1], target[len(_CORE_SD) :])]
    raise FhirPathEvaluationError(f"cannot check conformance to {target}: no profile validator available")


def _member_of(ctx: dict[str, Any], data: list[Any], valueset: Any) -> list[bool]:
    url = str_param(valueset)
    item = single_item(data)
    hook = env_of(ctx).member_of
    if item is None or url is None or hook is None:
        # Without terminology the answer is unknown, which FHIRPath spells as empty.
        return []
    value = system_value(item)
    result = call_hook(hook, data_of(value) if isinstance(value, ResourceNode) else value, url)
    return [] if result is None else [bool(result)]


def _html_checks(ctx: Any, data: list[Any]) -> list[bool]:
    value = single_value(data, "xhtml")
    if value is None:
        return []
    return [isinstance(value, str) and html_checks(value)]


def _check_modifiers(ctx: Any, data: list[Any], *urls: list[Any]) -> list[Any]:
    allowed = {system_value(u) for p in urls for u in p}
    for item in data:
        holder = data_of(item)
        if not isinstance(holder, Mapping):
            continue
        for ext in holder.get("modifierExtension", ()):
            if isinstance(ext, Mapping) and ext.get("url") not in allowed:
                raise FhirPathEvaluationError(f"unknown modifier extension {ext.get('url')}")
    return data


def _not_supported(name: str) -> Any:
    def fn(ctx: Any, data: list[Any], *params: Any) -> list[Any]:
        raise FhirPathEvaluationError(f"{name}() needs the validator's profile context, not available here")

    return fn


ENTRIES: dict[str, dict[str, Any]] = {
    "hasValue": {"fn": _has_value},
    "getValue": {"fn": _get_value},
    "extension": {"fn": _extension, "arity": {1: ["Any"]}},
    "hasExtension": {"fn": _has_extension, "arity": {1: ["Any"]}},
    "resolve": {"fn": _resolve},
    "conformsTo": {"fn": _conforms_to, "arity": {1: ["Any"]}},
    "memberOf": {"fn": _member_of, "arity": {1: ["Any"]}},
    "htmlChecks": {"fn": _html_checks},
    "checkModifiers": {"fn": _check_modifiers, "variadic": "Any"},
    "elementDefinition": {"fn": _not_supported("elementDefinition")},
    "slice": {"fn": _not_supported("slice"), "arity": {2: ["Any", "Any"]}},
    "subsumes": {"fn": _not_supported("subsumes"), "arity": {1: ["Any"]}},
    "subsumedBy": {"fn": _not_supported("subsumedBy"), "arity": {1: ["Any"]}},
}
