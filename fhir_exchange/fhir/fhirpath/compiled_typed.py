"""Typed results from the compiled back-end (:mod:`compiled`), for search index extraction.

https://hl7.org/fhir/R4/searchparameter.html: a parameter's expression selects the elements it
indexes, and how an element is indexed depends on its type (a Quantity, a Period, a CodeableConcept).
The compiled back-end reads raw JSON, so it knows a result's type only where the JSON or the
expression tells it: a choice element's key (``Observation.value`` found as ``valueQuantity`` is a
Quantity) and ``as``/``ofType`` (``(Observation.value as Quantity)``). Other items are typed None;
the index extractors go by their shape, as before. An ``extension(url)`` at the end of a branch
yields the extension's value (``Patient.extension('…mothersMaidenName')`` indexes the string),
which is what HAPI indexes and the core parameters mean.

Each ``|`` alternative is compiled on its own, and one that starts with another resource type than
the one being indexed is dropped at compile time (``clinical-patient`` names 30 types).
``resolve()`` finds contained resources and otherwise answers a stub of the reference's type, which
is all ``where(resolve() is Patient)`` needs (the full evaluator, and HAPI's indexer, do the same).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.compiled import compile_node
from fhir_exchange.fhir.fhirpath.compiled_operators import type_fn
from fhir_exchange.fhir.fhirpath.compiled_values import (
    CHOICE_NAMES,
    RESOURCE_TYPES,
    Collection,
    Env,
    Fn,
    Unsupported,
    children,
    choice_key,
    eq,
    hash_key,
)
from fhir_exchange.fhir.fhirpath.errors import FhirPathError

Item = tuple[Any, str | None]
TypedFn = Callable[[Collection, Env], list[Item]]
Node = dict[str, Any]

_ANY_RESOURCE: Final = frozenset({"Resource", "DomainResource"})
_REFERENCE_RE: Final = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")


def type_name(t: str) -> str:
    """``dateTime`` -> ``DateTime`` (the choice suffix spelling the extractors use)."""
    return t[:1].upper() + t[1:]


def _branches(node: Node) -> list[Node]:
    if node.get("type") == "UnionExpression":
        return _branches(node["children"][0]) + _branches(node["children"][1])
    return [node]


def _function_name(node: Node) -> str | None:
    if node.get("type") != "FunctionInvocation":
        return None
    return str(node["children"][0]["children"][0].get("text", "")).strip("`")


def _root_type(node: Node, constants: dict[str, Any]) -> str | None:
    """The resource type a branch starts with (``Observation.subject`` → Observation), if any."""
    kind = node.get("type")
    if kind in ("InvocationExpression", "TypeExpression", "IndexerExpression"):
        return _root_type(node["children"][0], constants)
    if _function_name(node) == "__typeFilter":
        const = node["children"][0]["children"][1]["children"][0]
        return str(constants.get(str(const["children"][0]["children"][0].get("text", ""))))
    return None


def _type_param(node: Node) -> str:
    text = str(node["children"][0]["children"][1]["children"][0].get("text", "")).replace("`", "")
    return text.removeprefix("FHIR.")


def _typed_branch(node: Node, constants: dict[str, Any], focus_type: str | None) -> TypedFn:
    kind = node.get("type")
    if kind == "TypeExpression" and node["terminalNodeText"][0] == "as":
        # ``(Observation.component.value as Quantity)``: a filter here, as HAPI's indexer reads it,
        # although the operator wants one item (the full evaluator fails on two components).
        type_text = str(node["children"][1].get("text", "")).replace("`", "").removeprefix("FHIR.")
        operand = compile_node(node["children"][0], constants, focus_type)[0]
        return _of_type(type_fn(operand, "ofType", type_text), type_text)
    if kind == "InvocationExpression":
        steps = node["children"]
        last = steps[-1]
        name = _function_name(last)
        if name in ("as", "ofType"):
            return _of_type(compile_node(node, constants, focus_type)[0], _type_param(last))
        if name == "extension":
            return _extension_values(compile_node(node, constants, focus_type)[0])
        if last.get("type") == "MemberInvocation":
            element = str(last["children"][0].get("text", "")).strip("`")
            if element in CHOICE_NAMES:
                prefix = steps[0] if len(steps) == 2 else {**node, "children": steps[:-1]}
                return _choice(compile_node(prefix, constants, focus_type)[0], element)
    fn = compile_node(node, constants, focus_type)[0]

    def untyped(c: Collection, env: Env) -> list[Item]:
        return [(v, None) for v in fn(c, env)]
    return untyped


def _of_type(fn: Fn, type_text: str) -> TypedFn:
    t = type_name(type_text.replace("`", "").removeprefix("FHIR."))

    def typed(c: Collection, env: Env) -> list[Item]:
        return [(v, t) for v in fn(c, env)]
    return typed


def _extension_values(fn: Fn) -> TypedFn:
    def values(c: Collection, env: Env) -> list[Item]:
        out: list[Item] = []
        for ext in fn(c, env):
            key = choice_key(ext, "value")
            if key is not None:
                out.extend((v, key[5:]) for v in children(ext, key))
        return out
    return values


def _choice(prefix: Fn, element: str) -> TypedFn:
    size = len(element)

    def choice(c: Collection, env: Env) -> list[Item]:
        out: list[Item] = []
        for x in prefix(c, env):
            if type(x) is dict and element in x:  # a choice here, a plain element in another type
                out.extend((v, None) for v in children(x, element))
                continue
            key = choice_key(x, element)
            if key is not None:
                out.extend((v, key[size:]) for v in children(x, key))
        return out
    return choice


def _union(fns: list[TypedFn]) -> TypedFn:
    def union(c: Collection, env: Env) -> list[Item]:
        items: list[Item] = []
        for fn in fns:
            items.extend(fn(c, env))
        if len(items) < 2:
            return items
        # ``|`` removes duplicates (fhirpath.html#union-collections): primitives by hash, the rest
        # (few: codes, references) by FHIRPath equality.
        out: list[Item] = []
        seen: set[tuple[str, Any]] = set()
        complex_values: list[Any] = []
        for item in items:
            key = hash_key(item[0])
            if key is None:
                if any(eq(item[0], x) for x in complex_values):
                    continue
                complex_values.append(item[0])
            elif key in seen:
                continue
            else:
                seen.add(key)
            out.append(item)
        return out
    return union


def compile_typed(expression: str, resource_type: str | None = None) -> TypedFn | None:
    """``fn(focus, env) -> [(value, type or None)]`` for ``expression``; None when no alternative
    of it applies to ``resource_type``. Raises :class:`Unsupported` outside the compiled subset."""
    from fhir_exchange.fhir import fhirpath

    try:
        prepared = fhirpath.compile(expression)
    except FhirPathError as e:
        raise Unsupported(str(e)) from e
    fns = []
    for branch in _branches(prepared.ast):
        root = _root_type(branch, prepared.constants)
        if resource_type is None or root is None or root == resource_type or root in _ANY_RESOURCE:
            fns.append(_typed_branch(branch, prepared.constants, resource_type))
    if not fns:
        return None
    return fns[0] if len(fns) == 1 else _union(fns)


def search_environment(resource: dict[str, Any]) -> Env:
    """The environment a search expression runs in: ``%resource`` and a ``resolve()`` for indexing."""
    def resolve(reference: str) -> dict[str, Any] | None:
        if reference.startswith("#"):
            for contained in resource.get("contained", ()):
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    return contained
            return resource if reference == "#" else None
        m = _REFERENCE_RE.fullmatch(reference)
        # Enough for ``resolve() is Patient``, which is how the R4 search parameters use it.
        if m is None or m.group(1) not in RESOURCE_TYPES:
            return None
        return {"resourceType": m.group(1), "id": m.group(2)}
    return {"resource": [resource], "rootResource": [resource], "context": [resource], "%resolve": resolve}
