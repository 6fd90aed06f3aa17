"""Parsing and AST preparation of FHIRPath expressions: http://hl7.org/fhirpath/N1/#grammar.

fhirpathpy's ANTLR parser, run strictly (its own ``parse()`` ignores syntax errors and trailing
text), then one pass over the AST (:class:`_Preparer`) that folds literals into constants,
restores FHIRPath 2.0 precedence of ``is``/``as``, inserts the internal collapse steps and
rejects unknown functions, wrong argument counts and unknown type names. :func:`prepare` is the
entry point; the result is what :class:`~fhir_exchange.fhir.fhirpath.engine.CompiledPath` holds.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_exchange.fhir.fhirpath.errors import FhirPathSyntaxError
from fhir_exchange.fhir.fhirpath.items import FHIRPATHPY_REGISTRY
from fhir_exchange.fhir.fhirpath.numbers import parse_number
from fhir_exchange.fhir.fhirpath.quantity import Quantity
from fhir_exchange.fhir.fhirpath.table import KNOWN_FUNCTIONS, TABLE
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import FHIR_TYPES, SYSTEM_TYPES

_VS_PREFIX = "http://hl7.org/fhir/ValueSet/"
_EXT_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

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


def prepare(expression: str) -> tuple[Node, dict[str, Any]]:
    """Parse ``expression`` strictly and prepare its AST: (root node, folded literal constants)."""
    text = _protect_partial_datetimes(expression)
    ast = _parse(text, expression)
    preparer = _Preparer(expression)
    root = preparer.transform(_rotate_type_operators(ast))
    return root, preparer.constants
