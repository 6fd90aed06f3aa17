"""FHIRPath http://hl7.org/fhirpath/N1/ as profiled by FHIR R4 https://hl7.org/fhir/R4/fhirpath.html.

The one FHIRPath entry point of the server (invariants, search parameter extraction,
``_filter``-style queries). N1 is the normative release R4 uses; the FHIRPath 2.0 additions the
official test suite exercises are supported too. The FHIR page adds the model, the environment
variables and the FHIR-specific functions.

Engine: fhirpathpy. We use its ANTLR parser, its R4 type model and its tree-walking evaluator
(``fhirpathpy.engine.do_eval``) unchanged, and plug in through the two inputs that evaluator
takes: ``userInvocationTable`` (our function/operator table, :mod:`fhirpath_functions`, which
replaces fhirpathpy's functions of the same name) and the model dict (fhirpathpy's R4 model with
a choice-type lookup that also works below an untyped context). Nothing in fhirpathpy is
patched. What those cannot reach is done here, on the parsed AST (a plain dict tree), once per
expression:

* parse strictly: fhirpathpy's own ``parse()`` silently ignores syntax errors and trailing text;
* fold literals into per-expression constants read through ``%`` variables, because fhirpathpy
  reads ``1.0`` as the integer 1, has no partial DateTime (``@2015T``), mis-unescapes strings and
  cannot negate a quantity;
* restore FHIRPath 2.0 precedence of ``is``/``as`` over ``|`` and comparisons (fhirpathpy's
  grammar is older), as the official tests and HAPI do;
* merge a primitive's value and its ``_name`` extension object, which fhirpathpy navigates as two
  nodes: every function and operator of our table does it on its input, and an internal
  ``__collapse()`` step goes before the two consumers that are fhirpathpy's (``[n]``, unary minus);
* drop pass-through nodes and flatten invocation chains (fhirpathpy pays per node);
* reject unknown functions, wrong argument counts and unknown type names at compile time.

``CompiledPath.check(base_type)`` adds the spec's strict mode as a separate static pass
(:mod:`fhirpath_check`): misspelt elements, ``valueQuantity`` for ``value``, wrong root type.

Conformance: the official R4 suite passes 934 of 935 cases
(``tests/conformance/test_fhirpath_suite.py``; the exception is listed with its reason in
``tests/conformance/fhirpath_known_failures.txt``). Speed: compiling is cached; evaluating a
typical invariant or search expression on a small resource takes 10-80 µs, about what
fhirpathpy alone takes.

Where the spec leaves a choice we follow HAPI: ``resolve()`` of an unresolvable
``Patient/123`` yields a stub ``{"resourceType": "Patient", "id": "123"}`` so that search
parameters like ``subject.where(resolve() is Patient)`` index without fetching; the ``as()``
function filters a collection (R4 invariant dom-3 depends on it); ``memberOf()`` without a
terminology hook is empty (unknown). Without ``context_path`` an element context has no FHIR
type: navigation and ``value[x]`` still work, ``is``/``as`` on it do not.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, cast

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_exchange.fhir.fhirpath.check import Checker
from fhir_exchange.fhir.fhirpath.errors import (
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSemanticError,
    FhirPathSyntaxError,
)
from fhir_exchange.fhir.fhirpath.functions import (
    KNOWN_FUNCTIONS,
    TABLE,
    ConformsTo,
    Environment,
    HookError,
    MemberOf,
    Resolver,
    Tracer,
    boolean_of,
    collapse,
    is_output_item,
    output_value,
)
from fhir_exchange.fhir.fhirpath.values import (
    EVAL_MODEL,
    FHIR_TYPES,
    R4_MODEL,
    SYSTEM_TYPES,
    UCUM,
    Quantity,
    Temporal,
    fhir_type_name,
    parse_number,
)

__all__ = [
    "CompiledPath",
    "ConformsTo",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirPathSemanticError",
    "FhirPathSyntaxError",
    "MemberOf",
    "Quantity",
    "Resolver",
    "Temporal",
    "Tracer",
    "TypedValue",
    "compile",
    "constraint_holds",
    "evaluate",
    "is_true",
]

# %-variables every FHIR expression may use (R4 fhirpath.html#variables); %resource,
# %rootResource and %context are set per evaluation.
ENVIRONMENT: dict[str, str] = {
    "ucum": UCUM,
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
FHIRPATHPY_REGISTRY = cast(dict[str, dict[str, Any]], invocation_registry)
_VS_PREFIX = "http://hl7.org/fhir/ValueSet/"
_EXT_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


class TypedValue(NamedTuple):
    """One result item with its FHIRPath type, e.g. ``("1974-12-25", "FHIR.date")``."""

    value: Any
    type: str | None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class CompiledPath:
    """A parsed and prepared expression; immutable and safe to share between threads."""

    __slots__ = ("_constants", "_root", "expression")

    def __init__(self, expression: str, root: dict[str, Any], constants: dict[str, Any]) -> None:
        self.expression = expression
        self._root = root
        self._constants = constants

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"

    @property
    def ast(self) -> dict[str, Any]:
        """The prepared AST (fhirpathpy's dict tree after preparation): the input of the compiled back-end."""
        return self._root

    @property
    def constants(self) -> dict[str, Any]:
        """The literals folded out of the AST, read through ``%`` variables of these names."""
        return self._constants

    def evaluate(
        self,
        resource: Any,
        context: Any | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        root_resource: Any | None = None,
        context_path: str | None = None,
        conforms_to: ConformsTo | None = None,
        member_of: MemberOf | None = None,
        trace: Tracer | None = None,
        now: datetime | None = None,
    ) -> list[Any]:
        """Evaluate against ``resource`` (FHIR JSON) with ``context`` as the focus.

        The result is plain Python: FHIR elements as the JSON found in the resource (dicts,
        str, bool, int/float), computed values as ``bool``/``int``/``Decimal``/``str``,
        dates and times as FHIR-format strings, quantities as FHIR Quantity dicts.

        ``context`` defaults to ``resource`` (``%resource``); ``root_resource`` is
        ``%rootResource`` (the container of a contained resource, or the Bundle an entry sits
        in: ``resolve()`` searches it). ``context_path`` names the FHIR type or element path of a
        non-resource ``context`` (``"Extension"``, ``"Observation.component"``,
        ``"Observation.effectiveDateTime"``) so ``is``/``as`` and choice elements work on and
        below it; without it the focus is untyped (navigation still works). ``resolver`` fetches references that are
        neither contained nor in the Bundle; ``conforms_to(resource, url)`` and
        ``member_of(code_or_coding, valueset_url)`` back ``conformsTo()`` and ``memberOf()``;
        ``trace(name, values)`` receives ``trace()`` output; ``now`` fixes ``now()``/``today()``.
        """
        items = self._run(
            resource, context, variables, resolver, root_resource, context_path,
            conforms_to, member_of, trace, now,
        )  # fmt: skip
        return [output_value(x) for x in items if is_output_item(x)]

    def check(self, base_type: str, *, foreign_roots: bool = False) -> None:
        """Check element names against the R4 model for a context of type ``base_type``.

        Raises :class:`FhirPathSemanticError` for a misspelt element, a concrete choice name
        (``valueQuantity``), a leading type name other than ``base_type`` (unless
        ``foreign_roots``, for multi-resource search expressions like ``A.x | B.y``) or
        ``first()``/``skip()``/``[n]`` on ``children()``/``descendants()``. Parts whose type
        cannot be known statically are not checked. See :mod:`fhirpath_check`.
        """
        Checker(self.expression, base_type, foreign_roots).run(self._root)

    def evaluate_typed(
        self,
        resource: Any,
        context: Any | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        root_resource: Any | None = None,
        context_path: str | None = None,
        conforms_to: ConformsTo | None = None,
        member_of: MemberOf | None = None,
        trace: Tracer | None = None,
        now: datetime | None = None,
    ) -> list[TypedValue]:
        """Like :meth:`evaluate`, each value paired with its type (``"FHIR.HumanName"``)."""
        items = self._run(
            resource, context, variables, resolver, root_resource, context_path,
            conforms_to, member_of, trace, now,
        )  # fmt: skip
        out = []
        for x in items:
            if is_output_item(x):
                t = fhir_type_name(x)
                out.append(TypedValue(output_value(x), None if t is None else f"{t[0]}.{t[1]}"))
        return out

    def _run(
        self,
        resource: Any,
        context: Any,
        variables: Mapping[str, Any] | None,
        resolver: Resolver | None,
        root_resource: Any,
        context_path: str | None,
        conforms_to: ConformsTo | None,
        member_of: MemberOf | None,
        tracer: Tracer | None,
        now: datetime | None,
    ) -> list[Any]:
        focus = resource if context is None else context
        if context_path is not None and focus is not None:
            focus = ResourceNode.create_node(focus, _focus_path(context_path))
        data_root = [] if focus is None else list(focus) if isinstance(focus, list) else [focus]
        vars_: dict[str, Any] = {
            **ENVIRONMENT,
            "resource": resource,
            "rootResource": resource if root_resource is None else root_resource,
            "context": focus,
        }
        if variables:
            for name, value in variables.items():
                # fhirpathpy hands list variables to expressions as-is; copy so nothing
                # downstream (unary minus mutates its operand list) can touch the caller's list.
                vars_[name] = list(value) if isinstance(value, list) else value
        vars_.update(self._constants)
        env = Environment(
            resource=resource,
            root_resource=resource if root_resource is None else root_resource,
            now=now,
            resolver=resolver,
            conforms_to=conforms_to,
            member_of=member_of,
            tracer=tracer,
        )
        ctx = {
            "$this": data_root,  # fhirpathpy leaves it unset outside where()/select(): KeyError
            "dataRoot": data_root,
            "vars": vars_,
            "model": EVAL_MODEL,
            "userInvocationTable": TABLE,
            "fx": env,
        }
        try:
            result = do_eval(ctx, data_root, self._root)
        except HookError as exc:
            raise exc.original from None
        except FhirPathError as exc:
            raise FhirPathEvaluationError(exc.message, self.expression) from exc
        except RecursionError as exc:
            raise FhirPathEvaluationError("expression nests too deeply", self.expression) from exc
        except Exception as exc:
            # fhirpathpy's own functions signal type errors with plain exceptions.
            raise FhirPathEvaluationError(f"{type(exc).__name__}: {exc}", self.expression) from exc
        return collapse(result if isinstance(result, list) else [result])


def _focus_path(context_path: str) -> str | None:
    """The fhirpathpy node path for a context: its FHIR type, or the path of a backbone element.

    ``Observation.effective[x]`` names no single type, so such a focus stays untyped; pass the
    concrete element (``Observation.effectiveDateTime``) or type (``dateTime``) instead.
    """
    path = context_path.replace("[x]", "")
    if path in R4_MODEL["path2Type"]:
        return R4_MODEL["path2Type"][path] or path
    if path in R4_MODEL["choiceTypePaths"]:
        return None
    return path


@functools.lru_cache(maxsize=4096)
def compile(expression: str) -> CompiledPath:
    """Parse and prepare ``expression`` once; raises :class:`FhirPathSyntaxError`."""
    try:
        text = _protect_partial_datetimes(expression)
        ast = _parse(text, expression)
        prepared = _Preparer(expression)
        root = prepared.transform(_rotate_type_operators(ast))
    except FhirPathError:
        raise
    except RecursionError:
        raise FhirPathSyntaxError("expression nests too deeply", expression) from None
    except Exception as exc:  # an AST shape we did not foresee: still the caller's bad input
        raise FhirPathSyntaxError(f"cannot compile: {type(exc).__name__}: {exc}", expression) from exc
    return CompiledPath(expression, root, prepared.constants)


def evaluate(resource: Any, expression: str, context: Any | None = None, **kw: Any) -> list[Any]:
    """``compile(expression).evaluate(resource, context, **kw)``."""
    return compile(expression).evaluate(resource, context, **kw)


def is_true(result: list[Any]) -> bool:
    """FHIRPath boolean evaluation of a result: empty is false, one non-boolean item is true.

    Raises :class:`FhirPathEvaluationError` for more than one item (spec: Singleton Evaluation of Collections).
    """
    return boolean_of(list(result)) is True


def constraint_holds(result: list[Any]) -> bool:
    """FHIR invariant semantics: an empty result or a single true means the constraint holds.

    A single ``false`` fails; one non-boolean item counts as true (singleton evaluation).
    More than one item is an error in the constraint itself and raises.
    """
    return boolean_of(list(result)) is not False


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _RaisingErrorListener(ErrorListener):
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any) -> None:
        raise FhirPathSyntaxError(f"syntax error at {line}:{column}: {msg}", self.expression)


def _parse(text: str, expression: str) -> dict[str, Any]:
    if not text.strip():
        raise FhirPathSyntaxError("empty expression", expression)
    listener = _RaisingErrorListener(expression)
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    # entireExpression (not fhirpathpy's expression) so trailing garbage is an error too.
    try:
        tree = parser.entireExpression()
    except FhirPathSyntaxError as exc:
        raise exc from None  # ANTLR's own recognition exception is noise to our callers
    ast_listener = ASTPathListener()
    ParseTreeWalker().walk(ast_listener, tree)
    root = ast_listener.parentStack[0]
    node = root["children"][0]
    if node.get("type") == "EntireExpression":
        node = node["children"][0]
    return node


_PARTIAL_DATETIME = re.compile(r"@(\d{4}(?:-\d{2}(?:-\d{2})?)?)T(?![0-9])")


def _protect_partial_datetimes(text: str) -> str:
    """Rewrite ``@2015T`` as ``%`@2015T``` outside strings and comments.

    fhirpathpy's lexer (N1 grammar) has no DateTime literal without a time after the ``T``;
    the delimited identifier survives lexing and the preparer turns it back into a constant.
    """
    if "T" not in text or "@" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'`\"":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(text[i:j])
            i = j
        elif ch == "@" and (m := _PARTIAL_DATETIME.match(text, i)):
            out.append(f"%`{m.group(0)}`")
            i = m.end()
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# AST preparation
# --------------------------------------------------------------------------------------------

Node = dict[str, Any]

_LOOSER_THAN_TYPE_OPS = ("UnionExpression", "InequalityExpression")


def _rotate_type_operators(node: Node) -> Node:
    """``a | b is T`` means ``a | (b is T)`` since FHIRPath 2.0; fhirpathpy parses ``(a | b) is T``.

    Only un-parenthesized operands are rotated, so ``(a | b) is T`` keeps its meaning.
    """
    children = node.get("children")
    if children:
        node = {**node, "children": [_rotate_type_operators(c) for c in children]}
    if node.get("type") == "TypeExpression":
        return _rotate(node)
    return node


def _rotate(node: Node) -> Node:
    left, type_spec = node["children"]
    if left.get("type") in _LOOSER_THAN_TYPE_OPS:
        inner = {**node, "children": [left["children"][1], type_spec]}
        return {**left, "children": [left["children"][0], _rotate(inner)]}
    return node


def _identifier(name: str) -> Node:
    return {"type": "Identifier", "text": name, "terminalNodeText": [name]}


def _constant_term(name: str) -> Node:
    return {
        "type": "ExternalConstantTerm",
        "terminalNodeText": [],
        "children": [{"type": "ExternalConstant", "terminalNodeText": ["%"], "children": [_identifier(name)]}],
    }


def _call(name: str, params: list[Node] | None = None) -> Node:
    functn: Node = {"type": "Functn", "terminalNodeText": ["(", ")"], "children": [_identifier(name)]}
    if params:
        functn["children"].append({"type": "ParamList", "terminalNodeText": [], "children": params})
    return {"type": "FunctionInvocation", "terminalNodeText": [], "children": [functn]}


def _chain(steps: list[Node]) -> Node:
    return {"type": "InvocationExpression", "terminalNodeText": ["."], "children": steps}


def _then(node: Node, function: str) -> Node:
    """``node.function()`` as an InvocationExpression."""
    return _chain([node, _call(function)])


def _ident_text(node: Node) -> str:
    return node.get("text", "").strip("`")


_TYPE_FUNCTIONS = frozenset({"is", "as", "ofType"})
_STRING_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _unescape(body: str, expression: str) -> str:
    def repl(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] == "u" and len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _STRING_ESCAPES:
            return _STRING_ESCAPES[code]
        raise FhirPathSyntaxError(f"invalid escape \\{code}", expression)

    return _ESCAPE_RE.sub(repl, body)


class _Preparer:
    """One pass over the AST: literals to constants, checks, collapse steps, sort directions."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.constants: dict[str, Any] = {}

    def constant(self, value: Any) -> Node:
        name = f"#lit{len(self.constants)}"
        self.constants[name] = value
        return _constant_term(name)

    def error(self, message: str) -> FhirPathSyntaxError:
        return FhirPathSyntaxError(message, self.expression)

    # -- dispatch ------------------------------------------------------------------------------
    # Pass-through wrappers (TermExpression, InvocationTerm, ParenthesizedTerm) are dropped and
    # invocation chains flattened: fhirpathpy pays a dispatch per node, so fewer nodes is faster.
    def transform(self, node: Node) -> Node:
        kind = node.get("type")
        if kind == "TermExpression":
            return self.term(node["children"][0])
        if kind == "ParenthesizedTerm":
            return self.transform(node["children"][0])
        if kind == "InvocationExpression":
            return self.chain(node)
        if kind == "PolarityExpression":
            folded = self.fold_polarity(node)
            if folded is not None:
                return folded
            return {**node, "children": [_then(self.transform(node["children"][0]), "__collapse")]}
        if kind == "IndexerExpression":
            collection, index = node["children"]
            return {**node, "children": [_then(self.transform(collection), "__collapse"), self.transform(index)]}
        if kind == "TypeExpression":
            self.check_type_specifier(node["children"][1])
            return {**node, "children": [self.transform(node["children"][0]), node["children"][1]]}
        if kind == "FunctionInvocation":
            return self.function_invocation(node)
        if kind == "ExternalConstantTerm":
            return self.external_constant(node)
        children = node.get("children")
        if children:
            return {**node, "children": [self.transform(c) for c in children]}
        return node

    def term(self, term: Node) -> Node:
        kind = term.get("type")
        if kind == "LiteralTerm":
            return self.literal(term)
        if kind == "InvocationTerm":
            invocation = term["children"][0]
            if invocation.get("type") == "MemberInvocation":
                name = _ident_text(invocation["children"][0])
                if name[:1].isupper():
                    return self.type_filter(name)
                return invocation
            if invocation.get("type") == "FunctionInvocation":
                return self.function_invocation(invocation)
            return invocation  # $this, $index, $total
        if kind == "ExternalConstantTerm":
            return self.external_constant(term)
        return self.transform(term)

    def type_filter(self, name: str) -> Node:
        """``Patient.name``: the leading type name keeps the focus if it is of that type.

        fhirpathpy compares ``resourceType`` only (so ``Resource.id`` or ``Extension.url`` on
        an Extension give nothing, and an element without ``resourceType`` raises); ours
        honours inheritance and element types.
        """
        call = _call("__typeFilter", [self.constant(name)])
        call["typeName"] = name  # for the static check
        return call

    def chain(self, node: Node) -> Node:
        """Flatten ``a.b.c()`` into one InvocationExpression with steps [a, b, c()].

        Navigation results keep fhirpathpy's separate value and ``_name`` nodes (which is what
        navigating on to ``extension`` or ``id`` of a primitive needs); every function and
        operator collapses its input, so only fhirpathpy's own consumers (indexer, unary minus)
        get an explicit ``__collapse()`` step.
        """
        left, right = node["children"][0], node["children"][1]
        new_left = self.transform(left)
        steps = list(new_left["children"]) if new_left.get("type") == "InvocationExpression" else [new_left]
        if right.get("type") == "FunctionInvocation":
            steps.append(self.function_invocation(right))
        else:
            steps.append(right)
        return _chain(steps)

    # -- functions -----------------------------------------------------------------------------
    def function_invocation(self, node: Node) -> Node:
        functn = node["children"][0]
        name = _ident_text(functn["children"][0])
        params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
        self.check_function(name, len(params))
        if name in _TYPE_FUNCTIONS:
            # fhirpathpy reads the type from the parameter's source text: leave it untouched.
            self.check_type_text(params[0].get("text", ""))
            return node
        new_params = [self.sort_key(p) if name == "sort" else self.transform(p) for p in params]
        param_list = {**functn["children"][1], "children": new_params} if params else None
        new_functn = {**functn, "children": [functn["children"][0], *([param_list] if param_list else [])]}
        return {**node, "children": [new_functn]}

    def sort_key(self, param: Node) -> Node:
        # sort(-name) means "descending by name", also for strings, where unary minus is an
        # error: mark the key instead of negating it.
        if param.get("type") == "PolarityExpression" and param["terminalNodeText"][:1] == ["-"]:
            return _then(self.transform(param["children"][0]), "__desc")
        return self.transform(param)

    def check_function(self, name: str, n_params: int) -> None:
        if name not in KNOWN_FUNCTIONS:
            raise self.error(f"unknown function {name}()")
        entry = TABLE.get(name) or FHIRPATHPY_REGISTRY[name]
        if "variadic" in entry:
            return
        arity = entry.get("arity", {0: []})
        if n_params not in arity:
            expected = " or ".join(str(n) for n in sorted(arity))
            raise self.error(f"{name}() takes {expected} parameter(s), got {n_params}")

    def check_type_specifier(self, node: Node) -> None:
        self.check_type_text(node.get("text", ""))

    def check_type_text(self, text: str) -> None:
        parts = text.replace("`", "").split(".")
        if len(parts) == 2 and parts[0] in ("FHIR", "System"):
            # System.X for an unknown X is legal (nothing is of that type); FHIR.X must exist.
            if parts[0] == "FHIR" and parts[1] not in FHIR_TYPES:
                raise self.error(f"unknown type {text}")
        elif len(parts) != 1 or parts[0] not in FHIR_TYPES | SYSTEM_TYPES:
            raise self.error(f"unknown type {text}")

    # -- literals and constants ---------------------------------------------------------------
    def external_constant(self, node: Node) -> Node:
        constant = node["children"][0]
        if not constant.get("children"):
            # %'name' (the grammar's string form): fhirpathpy expects an identifier child
            name = _unescape(constant["terminalNodeText"][-1][1:-1], self.expression)
            node = _constant_term(name)
        else:
            name = _ident_text(constant["children"][0])
        if name.startswith("@"):
            value = Temporal.parse_datetime(name[1:].rstrip("T"))
            if value is None:
                raise self.error(f"invalid DateTime literal {name}")
            return self.constant(value)
        if name.startswith("vs-"):
            return self.constant(_VS_PREFIX + name[3:])
        if name.startswith("ext-"):
            return self.constant(_EXT_PREFIX + name[4:])
        return node

    def literal(self, term: Node) -> Node:
        literal = term["children"][0]
        kind = literal.get("type")
        text = literal.get("text", "")
        if kind == "NumberLiteral":
            return self.constant(parse_number(text))
        if kind == "StringLiteral":
            return self.constant(_unescape(text[1:-1], self.expression))
        if kind == "DateTimeLiteral":
            body = text[1:]
            value = Temporal.parse_datetime(body.rstrip("T")) if "T" in body else Temporal.parse_date(body)
            if value is None:
                raise self.error(f"invalid date/time literal {text}")
            return self.constant(value)
        if kind == "TimeLiteral":
            value = Temporal.parse_time(text[2:])
            if value is None:
                raise self.error(f"invalid time literal {text} (a Time has no timezone)")
            return self.constant(value)
        if kind == "QuantityLiteral":
            return self.constant(self.quantity(literal))
        return term  # true/false and {} are read correctly by fhirpathpy

    def quantity(self, literal: Node) -> Quantity:
        quantity_node = literal["children"][0]
        value = parse_number(quantity_node["terminalNodeText"][0])
        unit_node = quantity_node["children"][0] if quantity_node.get("children") else None
        if unit_node is None:
            return Quantity(value, "1")
        if unit_node["terminalNodeText"]:
            return Quantity(value, _unescape(unit_node["terminalNodeText"][0][1:-1], self.expression))
        keyword = unit_node["children"][0]["terminalNodeText"][0]
        return Quantity(value, keyword, True)

    def fold_polarity(self, node: Node) -> Node | None:
        """``-5.5 'mg'`` and ``-1``: fhirpathpy negates numbers only, so fold the literal."""
        operand = node["children"][0]
        if operand.get("type") != "TermExpression" or operand["children"][0].get("type") != "LiteralTerm":
            return None
        literal = operand["children"][0]["children"][0]
        if literal.get("type") not in ("NumberLiteral", "QuantityLiteral"):
            return None
        negative = node["terminalNodeText"][:1] == ["-"]
        if literal["type"] == "NumberLiteral":
            number = parse_number(literal["text"])
            return self.constant(-number if negative else number)
        q = self.quantity(literal)
        value: Decimal | int = -q.value if negative else q.value
        return self.constant(Quantity(value, q.unit, q.calendar))
