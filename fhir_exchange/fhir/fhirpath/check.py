"""Static checking of a FHIRPath expression against the R4 model ("strict mode").

Spec: http://hl7.org/fhirpath/N1/#type-safety-and-strict-evaluation and
https://hl7.org/fhir/R4/fhirpath.html#types ("Observation.value", never "Observation.valueQuantity").

Evaluation is lenient: a misspelt element simply yields nothing, which silently turns a custom
SearchParameter or invariant into a no-op. ``CompiledPath.check(base_type)`` walks the prepared
AST with the set of FHIR types each sub-expression can have and reports:

* navigation to an element the type does not define (``name.given1``),
* a concrete choice element name (``valueQuantity``; FHIRPath sees only ``value``),
* a leading resource type name other than the base (``Encounter.name`` on a Patient),
* an order-dependent function (``first()``, ``skip()``, ``[0]``...) applied to the unordered
  result of ``children()``/``descendants()``.

Anything the walk cannot type (function results, ``resolve()``, variables, abstract
``Resource`` elements) is left unchecked, so the check never rejects a valid expression for
lack of knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_exchange.fhir.fhirpath.errors import FhirPathSemanticError
from fhir_exchange.fhir.fhirpath.values import (
    FHIR_PRIMITIVES,
    FHIR_TYPES,
    R4_MODEL,
    is_subtype,
)

_PATH2TYPE: dict[str, str | None] = R4_MODEL["path2Type"]
_CHOICES: dict[str, list[str]] = R4_MODEL["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = R4_MODEL["pathsDefinedElsewhere"]
_TYPE2PARENT: dict[str, str | None] = R4_MODEL["type2Parent"]

_SAME_TYPE = frozenset(
    {"__collapse", "where", "first", "last", "tail", "skip", "take", "single", "distinct", "trace",
     "exclude", "intersect", "sort", "checkModifiers"}
)  # fmt: skip
_NEEDS_ORDER = frozenset({"first", "last", "tail", "skip", "take"})
_ITERATING = frozenset({"where", "select", "exists", "all", "repeat", "aggregate", "sort", "trace", "iif"})
_TYPE_FUNCTIONS = frozenset({"is", "as", "ofType"})
_OPAQUE = frozenset({"Resource", "DomainResource"})  # elements typed Resource hold any resource


def _element_paths() -> frozenset[str]:
    # path2Type has no entry for a backbone element itself (it has no type name), only for its
    # children, so every prefix of a known path is a known element too.
    paths: set[str] = set(_CHOICES) | set(_ELSEWHERE)
    for path in _PATH2TYPE:
        parts = path.split(".")
        paths.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return frozenset(paths)


_ELEMENT_PATHS = _element_paths()


@dataclass(frozen=True, slots=True)
class _State:
    """The possible types of a collection (None: unknown) and whether its order is defined."""

    types: frozenset[str] | None
    ordered: bool = True


_UNKNOWN = _State(None)


class _Invalid(Exception):
    pass


def _choice_type(suffix: str) -> str:
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if lowered in FHIR_PRIMITIVES else suffix


def _child_types(type_path: str, name: str, inherited: bool = False) -> frozenset[str] | None:
    """Types of ``type_path.name``; None when unknown; raises _Invalid if there is no such element.

    ``inherited``: ``type_path`` was reached by walking up from a concrete type, so an element
    unknown to ``Resource``/``DomainResource`` too is unknown to that type (``Patient.nmae``); an
    element *typed* Resource (``Bundle.entry.resource``) still holds any resource and stays unchecked."""
    if type_path in _OPAQUE and not inherited:
        return None
    if type_path in FHIR_PRIMITIVES or type_path.startswith("System."):
        if name == "id":
            return frozenset({"System.String"})
        if name == "extension":
            return frozenset({"Extension"})
        raise _Invalid
    path = _ELSEWHERE.get(f"{type_path}.{name}", f"{type_path}.{name}")
    if path in _CHOICES:
        return frozenset(_choice_type(t) for t in _CHOICES[path])
    if path in _ELEMENT_PATHS:
        for base, types in _choice_bases(type_path):
            if name.startswith(base) and name[len(base) :] in types:
                raise _Invalid  # valueQuantity: FHIRPath names the element "value"
        resolved = _PATH2TYPE.get(path)
        return frozenset({resolved if resolved is not None else path})
    parent = "BackboneElement" if "." in type_path else _TYPE2PARENT.get(type_path)
    if parent is None:
        raise _Invalid
    return _child_types(parent, name, inherited=True)


def _choice_bases(type_path: str) -> list[tuple[str, list[str]]]:
    prefix = f"{type_path}."
    return [
        (p[len(prefix) :], ts) for p, ts in _CHOICES.items() if p.startswith(prefix) and "." not in p[len(prefix) :]
    ]


def _base_types(base: str) -> tuple[str, frozenset[str] | None]:
    """The type(s) of a context given as a type name or an element path (``Patient.contact``)."""
    path = base.replace("[x]", "")
    if path in _CHOICES:
        return path, frozenset(_choice_type(t) for t in _CHOICES[path])
    if "." not in path:
        return path, frozenset({path}) if path in FHIR_TYPES else None
    path = _ELSEWHERE.get(path, path)
    if path not in _ELEMENT_PATHS:
        return path, None
    resolved = _PATH2TYPE.get(path)
    return path, frozenset({resolved if resolved is not None else path})


class Checker:
    def __init__(self, expression: str, base_type: str, foreign_roots: bool) -> None:
        self.expression = expression
        self.foreign_roots = foreign_roots
        self.base_type, self.base = _base_types(base_type)
        # %resource is the context only when the context is a resource (not an element path).
        is_resource = self.base is not None and "." not in base_type and is_subtype(self.base_type, "Resource")
        self.resource_types = self.base if is_resource else None

    def fail(self, message: str) -> FhirPathSemanticError:
        return FhirPathSemanticError(message, self.expression)

    def run(self, root: dict[str, Any]) -> None:
        if self.base is None:
            return  # a logical model or unknown type: nothing to check against
        start = _State(self.base)
        self.visit(root, start, start, at_root=True)

    # -- expressions ---------------------------------------------------------------------------
    def visit(self, node: dict[str, Any], focus: _State, this: _State, at_root: bool = False) -> _State:
        kind = node.get("type")
        children = node.get("children", [])
        if kind in ("MemberInvocation", "FunctionInvocation", "ThisInvocation", "IndexInvocation", "TotalInvocation"):
            return self.invocation(node, focus, this, at_root)
        if kind in ("ExternalConstantTerm", "LiteralTerm"):
            return self.term(node, focus, this, at_root)
        if kind == "TermExpression":
            return self.term(children[0], focus, this, at_root)
        if kind == "InvocationExpression":
            state = self.visit(children[0], focus, this, at_root)
            for step in children[1:]:
                state = self.invocation(step, state, this, at_root=False)
            return state
        if kind == "PolarityExpression":
            self.visit(children[0], focus, this, at_root)
            return _UNKNOWN
        if kind == "IndexerExpression":
            state = self.visit(children[0], focus, this, at_root)
            self.visit(children[1], this, this)
            if not state.ordered:
                raise self.fail("indexing the unordered result of children()/descendants()")
            return state
        if kind == "ParenthesizedTerm":
            return self.visit(children[0], focus, this, at_root)
        if kind == "TypeExpression":
            self.visit(children[0], focus, this, at_root)
            if node["terminalNodeText"][:1] == ["as"]:
                return self.named_type(children[1].get("text", ""))
            return _UNKNOWN
        if kind == "UnionExpression":
            left = self.visit(children[0], focus, this, at_root)
            right = self.visit(children[1], focus, this, at_root)
            if left.types is None or right.types is None:
                return _UNKNOWN
            return _State(left.types | right.types)
        for child in children:
            if isinstance(child, dict) and child.get("type") not in ("TypeSpecifier",):
                self.visit(child, focus, this, at_root)
        return _UNKNOWN

    def term(self, term: dict[str, Any], focus: _State, this: _State, at_root: bool) -> _State:
        kind = term.get("type")
        if kind == "InvocationTerm":
            return self.invocation(term["children"][0], focus, this, at_root)
        if kind == "ParenthesizedTerm":
            return self.visit(term["children"][0], focus, this, at_root)
        if kind == "ExternalConstantTerm":
            name = term["children"][0]["children"][0].get("text", "").strip("`")
            if name == "context":
                return _State(self.base)
            return _State(self.resource_types) if name == "resource" else _UNKNOWN
        return _UNKNOWN

    def invocation(self, node: dict[str, Any], focus: _State, this: _State, at_root: bool) -> _State:
        kind = node.get("type")
        if kind == "MemberInvocation":
            return self.member(node["children"][0].get("text", "").strip("`"), focus, at_root)
        if kind == "FunctionInvocation":
            return self.function(node, focus, this, at_root)
        if kind == "ThisInvocation":
            return this
        return _UNKNOWN

    def member(self, name: str, focus: _State, at_root: bool) -> _State:
        if name[:1].isupper():
            if name not in FHIR_TYPES:
                raise self.fail(f"unknown type {name}")
            if at_root and focus.types == self.base and self.base is not None:
                if self.base_type == name or is_subtype(self.base_type, name):
                    return focus
                if self.foreign_roots:
                    return _UNKNOWN
                raise self.fail(f"the expression starts at {name}, the context is a {self.base_type}")
            return _State(frozenset({name}))
        if focus.types is None:
            return _UNKNOWN
        result: set[str] = set()
        valid = False
        for type_path in focus.types:
            try:
                child = _child_types(type_path, name)
            except _Invalid:
                continue
            valid = True
            if child is None:
                return _State(None, focus.ordered)
            result |= child
        if not valid:
            shown = " or ".join(sorted(focus.types))
            raise self.fail(f"{shown} has no element named '{name}'")
        return _State(frozenset(result), focus.ordered)

    def function(self, node: dict[str, Any], focus: _State, this: _State, at_root: bool) -> _State:
        if "typeName" in node:  # a leading type name, Patient.name (see the preparer)
            return self.member(node["typeName"], focus, at_root)
        functn = node["children"][0]
        name = functn["children"][0].get("text", "").strip("`")
        params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
        if name in _TYPE_FUNCTIONS:
            if name == "is":
                return _UNKNOWN
            return self.named_type(params[0].get("text", "")) if focus.types is not None else _UNKNOWN
        item = _State(focus.types)
        for param in params:
            self.visit(param, item if name in _ITERATING else this, item if name in _ITERATING else this)
        if name in _NEEDS_ORDER and not focus.ordered:
            raise self.fail(f"{name}() on the unordered result of children()/descendants()")
        if name in _SAME_TYPE:
            return focus
        if name in ("children", "descendants"):
            return _State(None, ordered=False)
        if name in ("extension",):
            return _State(frozenset({"Extension"}))
        if name == "select" and params:
            return self.visit(params[0], item, item)
        return _UNKNOWN

    def named_type(self, text: str) -> _State:
        parts = text.replace("`", "").split(".")
        if len(parts) == 2 and parts[0] == "System":
            return _UNKNOWN
        name = parts[-1]
        return _State(frozenset({name})) if name in FHIR_TYPES else _UNKNOWN
