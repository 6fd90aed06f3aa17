"""The compiled back-end of the FHIRPath engine: http://hl7.org/fhirpath/N1/ (R4 fhirpath.html).

One engine, two back-ends. :func:`fhir_exchange.fhir.fhirpath.compile` parses and prepares an
expression once (its ``ast`` and folded ``constants``); the full evaluator (fhirpathpy plus the
package's functions) runs every expression, about 10-80 µs each. Invariants run on nearly every
element of every resource and search parameters on every write, so this module compiles the same
prepared AST a second way: into Python closures over the raw JSON, a few µs per evaluation.

It covers what core invariants and search parameters use: paths, ``exists``/``empty``/``count``/
``all``/``where``/``select`` and friends, boolean logic, comparisons of strings, numbers, dates of
one precision and UCUM quantities, string functions, ``extension(url)``, ``resolve()`` through the
caller's ``%resolve``, ``memberOf()`` through ``%member_of``, ``conformsTo()`` through
``%conforms_to``. Types are known only where raw JSON tells them: resource types (``resourceType``)
and a choice element reached by its name (``value.ofType(Quantity)`` reads ``valueQuantity``);
``descendants().ofType(T)`` asks the caller's ``%typed_descendants``.

Anything beyond — types of other elements, date literals and arithmetic, dates of different
precision, ``$index``, unknown variables — raises :class:`Unsupported`, at compile time or (for
values) at run time; the caller then evaluates the expression with the full evaluator.
``tests/unit/test_fhirpath_differential.py`` checks that both back-ends agree on every core
invariant and SearchParameter over the example resources, so the subset cannot drift silently.

Speed, without changing a result: a closure whose result is at most one boolean carries its
``truth`` (no list built; ``and``/``or``/criteria/the invariant verdict call it); ``a.b.c`` is one
loop; literal comparisons, ``intersect`` with literal strings and full-precision dates take short
paths; a part free of the focus is evaluated once per environment (``shared``), a chain repeated in
one expression once per focus (``common``). ``a or b or c`` (``and`` alike) is one loop over the
terms' truths, and ``system = 'u' and code = 'c'`` one call comparing the keys; ``.not()`` of
``exists()``/``empty()``/string predicates is fused with them; ``exists()``/``empty()`` of a chain
or of ``where()``, ``first()`` of a key and ``=`` of two booleans build no lists.

Semantics follow the spec: collections everywhere, three-valued ``and``/``or``/``implies``/``not``,
``=`` on empty collections is empty, singleton evaluation of collections for operators.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.compiled_functions import function
from fhir_exchange.fhir.fhirpath.compiled_operators import binary, indexer, path, type_filter, type_fn
from fhir_exchange.fhir.fhirpath.compiled_values import (
    UCUM,
    Collection,
    Env,
    Fn,
    Unsupported,
    common,
    const,
    free,
    free_if,
    guard_keys,
    identity,
    shared,
    tag,
    touches,
    truth,
    unique,
)
from fhir_exchange.fhir.fhirpath.errors import FhirPathError

__all__ = ["Env", "Unsupported", "compile_fast", "compile_node", "guard_keys", "touches"]

Node = dict[str, Any]
_LITERAL: Final = re.compile(r'"(#lit\d+)"')

# %-variables every FHIR expression may use (fhirpath.html#variables) that are plain strings.
_ENVIRONMENT: Final = {"ucum": UCUM, "sct": "http://snomed.info/sct", "loinc": "http://loinc.org"}
_VARIABLES: Final = frozenset({"resource", "rootResource", "context"})
# Functions whose arguments are evaluated on each item of the input, not on the outer focus.
_PER_ITEM: Final = frozenset({"exists", "where", "select", "all"})
_BINARY_NODES: Final = frozenset({
    "OrExpression", "AndExpression", "ImpliesExpression", "EqualityExpression", "InequalityExpression",
    "MembershipExpression", "UnionExpression", "AdditiveExpression", "MultiplicativeExpression",
})


def _ident(node: Node) -> str:
    return str(node.get("text", "")).strip("`")


def _type_name(text: str) -> str:
    parts = text.replace("`", "").split(".")
    if len(parts) == 2 and parts[0] == "FHIR":
        return parts[1]
    if len(parts) != 1:
        raise Unsupported(f"type {text}")  # System types: the JSON does not tell them apart
    return parts[0]


class _Compiler:
    """One pass over the prepared AST, building closures bottom-up."""

    def __init__(self, constants: dict[str, Any], focus_type: str | None = None) -> None:
        self.constants = constants
        # The resource type the focus is known to have (search: the resource being indexed).
        self.focus_type = focus_type
        # Element names the expression reads from its focus (conservatively: every name that starts
        # a path anywhere, arguments included); None once it reads the focus as a whole.
        self.names: set[str] | None = set()
        # How many per-item criteria (where/all/select/exists) enclose the part being compiled:
        # only there is a focus-free part evaluated more than once per environment.
        self.per_item = 0
        # Chains of steps (with a function) that occur more than once in the expression, by their
        # text; each gets one cache token (:func:`common`), set by :meth:`count_common`.
        self.repeated: dict[str, object] = {}

    def reads(self, name: str | None) -> None:
        if self.names is not None:
            if name is None:
                self.names = None
            else:
                self.names.add(name)

    def shared(self, fn: Fn) -> Fn:
        return shared(fn) if self.per_item else fn

    def key(self, steps: list[Node]) -> str:
        """The text of a chain of steps, literals by their value (the parser numbers each one)."""
        text = json.dumps(steps, sort_keys=True)
        return _LITERAL.sub(lambda m: json.dumps(repr(self.constants.get(m.group(1)))), text)

    def count_common(self, ast: Node) -> None:
        counts: dict[str, int] = {}
        stack = [ast]
        while stack:
            node = stack.pop()
            if type(node) is not dict:
                continue
            stack.extend(node.get("children", ()))
            if node.get("type") != "InvocationExpression":
                continue
            steps = node["children"]
            for i in range(2, len(steps) + 1):
                if any(s.get("type") == "FunctionInvocation" for s in steps[:i]):
                    k = self.key(steps[:i])
                    counts[k] = counts.get(k, 0) + 1
        self.repeated = {k: object() for k, n in counts.items() if n > 1}

    def expr(self, node: Node) -> Fn:
        kind = node.get("type")
        if kind == "InvocationExpression":
            steps = node["children"]
            fn = self.expr(steps[0])
            for i, step in enumerate(steps[1:], 2):
                fn = self.invoke(fn, step)
                if self.repeated and not self.per_item and not free(fn):
                    # Outside per-item criteria the focus is the expression's own: a repeated
                    # chain is evaluated once.
                    token = self.repeated.get(self.key(steps[:i]))
                    if token is not None:
                        fn = common(fn, token)
            return fn
        if kind == "MemberInvocation":
            name = _ident(node["children"][0])
            if name[:1].isupper():
                raise Unsupported(f"type name {name} as a term")
            self.reads(name)
            return path(identity, name)
        if kind == "FunctionInvocation":
            return self.function(identity, node)
        if kind == "ThisInvocation":
            self.reads(None)
            return identity
        if kind == "ExternalConstantTerm":
            return self.constant(node)
        if kind == "LiteralTerm":
            literal = node["children"][0]
            if literal.get("type") == "BooleanLiteral":
                return const([literal.get("text") == "true"])
            if literal.get("type") == "NullLiteral":
                return const([])
            raise Unsupported(f"literal {literal.get('type')}")
        if kind in _BINARY_NODES:
            return self.binary(node)
        if kind == "TypeExpression":
            left = self.expr(node["children"][0])
            op = node["terminalNodeText"][0]
            type_name = _type_name(node["children"][1].get("text", ""))
            if op == "as":
                return free_if(_as_operator(left, type_fn(left, "ofType", type_name)), free(left))
            return free_if(type_fn(left, op, type_name), free(left))
        if kind == "PolarityExpression":
            return self.polarity(node)
        if kind == "IndexerExpression":
            fn, index = self.expr(node["children"][0]), self.expr(node["children"][1])
            is_free = free(fn) and free(index)
            if not is_free:
                fn, index = self.shared(fn), self.shared(index)
            return free_if(indexer(fn, index), is_free)
        if kind in ("TermExpression", "ParenthesizedTerm", "InvocationTerm"):
            return self.expr(node["children"][0])
        raise Unsupported(f"{kind}")  # $index, $total, ...

    def binary(self, node: Node) -> Fn:
        op = node["terminalNodeText"][0]
        left, right = self.expr(node["children"][0]), self.expr(node["children"][1])
        if op == "|" and hasattr(left, "const") and hasattr(right, "const"):
            # A union of literals (``'draft' | 'requested' | ...``) is folded once, here.
            return const(unique(left.const + right.const))
        is_free = free(left) and free(right)
        if not is_free:
            left, right = self.shared(left), self.shared(right)
        return free_if(binary(op, left, right), is_free)

    def polarity(self, node: Node) -> Fn:
        inner = self.expr(node["children"][0])
        if node["terminalNodeText"][:1] == ["+"]:
            return inner

        def neg(c: Collection, env: Env) -> Collection:
            return [-x for x in inner(c, env) if isinstance(x, (int, float)) and type(x) is not bool]
        return free_if(neg, free(inner))

    def constant(self, node: Node) -> Fn:
        name = _ident(node["children"][0]["children"][0]) if node["children"][0].get("children") else ""
        if name in self.constants:
            value = self.constants[name]
            if type(value) is str:
                return tag(const([value]), string_literal=value)
            if type(value) in (bool, int):
                return const([value])
            if isinstance(value, Decimal):
                return const([float(value)])  # JSON decimals are floats (jsonio.Decimal) here
            raise Unsupported(f"literal of type {type(value).__name__}")  # dates, times, quantities
        if name in _ENVIRONMENT:
            return const([_ENVIRONMENT[name]])
        if name not in _VARIABLES:
            raise Unsupported(f"variable %{name}")
        self.reads(None)

        def variable(c: Collection, env: Env) -> Collection:
            return env[name]
        return tag(variable, focus_free=True, trivial=True)

    def invoke(self, base: Fn, step: Node) -> Fn:
        kind = step.get("type")
        if kind == "MemberInvocation":
            return free_if(path(base, _ident(step["children"][0])), free(base))
        if kind == "FunctionInvocation":
            return self.function(base, step)
        raise Unsupported(f"invocation {kind}")

    def function(self, base: Fn, node: Node) -> Fn:
        functn = node["children"][0]
        name = _ident(functn["children"][0])
        params: list[Node] = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
        if base is identity:
            # A function of the focus itself reads all of it, except extension(url).
            self.reads("extension" if name == "extension" else None)
        if name == "__collapse":
            return base  # raw JSON has no separate value and extension nodes to merge
        if name == "__typeFilter":
            value = str(self.constants.get(_ident(params[0]["children"][0]["children"][0])))
            if base is identity and not self.per_item and value in (self.focus_type, "Resource"):
                return identity  # ``Observation.code`` on an Observation: nothing to filter
            return type_filter(base, value)
        if name in ("ofType", "is", "as"):
            return free_if(type_fn(base, name, _type_name(params[0].get("text", ""))), free(base))
        per_item = name in _PER_ITEM
        self.per_item += per_item
        try:
            args = [self.expr(p) for p in params]
        finally:
            self.per_item -= per_item
        # The criteria of these are evaluated on each item, never on the outer focus.
        is_free = free(base) and (per_item or all(free(a) for a in args))
        if not is_free:
            # A per-item function evaluates its arguments once per item.
            base, args = self.shared(base), [shared(a) if per_item else self.shared(a) for a in args]
        return free_if(function(base, name, args), is_free)


def _as_operator(operand: Fn, filtered: Fn) -> Fn:
    """``x as T``: the operator needs one item (an error otherwise); the function ``as(T)`` filters."""
    def as_operator(c: Collection, env: Env) -> Collection:
        if len(operand(c, env)) > 1:
            raise Unsupported("'as' of more than one item")
        return filtered(c, env)
    return as_operator


def compile_node(ast: Node, constants: dict[str, Any],
                 focus_type: str | None = None) -> tuple[Fn, frozenset[str] | None]:
    """Closures for a prepared AST (``CompiledPath.ast``/``.constants``) and the names it reads;
    ``focus_type`` is the resource type the focus is known to have, if any."""
    compiler = _Compiler(constants, focus_type)
    compiler.count_common(ast)
    fn = compiler.expr(ast)
    if fn is identity:
        def this(c: Collection, env: Env) -> Collection:
            return c
        fn = this
    return fn, frozenset(compiler.names) if compiler.names is not None else None


# Functions whose closures read the environment's hooks; conformsTo() even answers without its hook.
_ENV_FUNCTIONS: Final = frozenset({"resolve", "memberOf", "conformsTo", "descendants"})


def _env_free(ast: Node, constants: dict[str, Any]) -> bool:
    """Does the expression read nothing from the environment (no %resource/%rootResource/%context,
    no hook)? Its closures may still cache in it (``shared``/``common``), in a fresh one."""
    stack = [ast]
    while stack:
        node = stack.pop()
        if type(node) is not dict:
            continue
        kind = node.get("type")
        if kind == "ExternalConstantTerm":
            inner = node["children"][0].get("children") if node.get("children") else None
            name = _ident(inner[0]) if inner else ""
            if name not in constants and name not in _ENVIRONMENT:
                return False
        elif kind == "FunctionInvocation" and _ident(node["children"][0]["children"][0]) in _ENV_FUNCTIONS:
            return False
        stack.extend(node.get("children", ()))
    return True


def _unwrap(node: Node) -> Node:
    while node.get("type") in ("TermExpression", "ParenthesizedTerm") and node.get("children"):
        node = node["children"][0]
    return node


def _env_free_head(ast: Node, constants: dict[str, Any]) -> Node | None:
    """The longest leading part ``a`` of ``a or b ...`` that reads nothing from the environment."""
    node = _unwrap(ast)
    while node.get("type") == "OrExpression" and node.get("terminalNodeText", [""])[0] == "or":
        left = node["children"][0]
        if _env_free(left, constants):
            return left
        node = _unwrap(left)
    return None


def compile_fast(expression: str) -> Fn:
    """Compile ``expression``; raises :class:`Unsupported` when it is outside the compiled subset.

    The result is called as ``fn(focus, env)`` with ``env`` holding ``resource``, ``rootResource``
    and ``context`` (each a collection) and the optional hooks ``%resolve``, ``%member_of``,
    ``%conforms_to``, ``%typed_descendants``. It carries ``focus_names``: the element names it may
    read from its focus, or None."""
    from fhir_exchange.fhir import fhirpath  # the package imports its parts, not the other way

    try:
        prepared = fhirpath.compile(expression)
    except FhirPathError as e:
        raise Unsupported(str(e)) from e
    fn, names = compile_node(prepared.ast, prepared.constants)
    # What a caller may evaluate before it builds an environment (with a fresh, empty one): the
    # whole expression when it reads nothing from it (``env_free``), else the leading terms of an
    # ``or`` that do (``head_truth``: when they are true, so is the expression).
    if _env_free(prepared.ast, prepared.constants):
        return tag(fn, focus_names=names, env_free=True)
    head = _env_free_head(prepared.ast, prepared.constants)
    if head is not None:
        try:
            return tag(fn, focus_names=names, head_truth=truth(compile_node(head, prepared.constants)[0]))
        except Unsupported:
            pass
    return tag(fn, focus_names=names)
