"""The ``_filter`` parameter (https://hl7.org/fhir/R4/search_filter.html): a boolean expression of
comparisons, ``name co "pet" and (gender eq female or birthdate ge 1990-01-01)``, parsed into the
query model of :mod:`fhir_exchange.search.query`.

Grammar (the spec's, with the precedence made explicit: ``not`` binds tighter than ``and``, ``and``
tighter than ``or``; keywords and operators are case-insensitive)::

    filter     = orExp
    orExp      = andExp ("or" andExp)*
    andExp     = unary ("and" unary)*
    unary      = "not" "(" filter ")" / "(" filter ")" / comparison
    comparison = paramPath SP compareOp SP value
    paramPath  = name ("." name)*            ; a chain: subject.name
    value      = JSON string / token          ; token: no whitespace, ")" or "]"

Each comparison becomes exactly the :class:`~fhir_exchange.search.query.Criterion` that the equivalent
plain parameter gives (``gender eq female`` is ``gender=female``, ``name co "pet"`` is
``name:contains=pet``, ``birthdate ge 1990`` is ``birthdate=ge1990``, ``status ne final`` is
``status:not=final``, ``x pr true`` is ``x:missing=false``), built by the same parser
(:func:`fhir_exchange.search.parse.criterion`, passed in as ``resolve``), so each parameter type's
logic is the one of plain search. ``and`` is :class:`AllOf` (flattened into the query's criteria at the
top), ``or`` :class:`AnyOf`, ``not`` :class:`Not`; every store compiles them and the matcher evaluates
them.

Operators per parameter type (anything else is a 400 naming the operator and the parameter):

=============================  ===============================================================
string                         ``eq`` (normalised equality), ``ne`` (not eq), ``co``, ``sw``, ``ew``
token                          ``eq``, ``ne`` (``:not``), ``in``/``ni`` (``:in``/``:not-in``),
                               ``ss``/``sb`` (``:below``/``:above``)
date, number, quantity         ``eq ne gt lt ge le sa eb ap`` (the search prefixes)
reference                      ``eq``, ``re``, ``ne`` (not eq)
uri                            ``eq``, ``ne`` (not eq), ``sw`` (``:below``)
composite, special (near)      ``eq`` (``ne`` for composites)
every type                     ``pr true|false`` (``:missing=false|true``)
=============================  ===============================================================

Not supported: ``po``, filters on a path step (``related[type eq has-component].target``), ``_has``
inside a filter. Errors are 400 OperationOutcomes naming the (1-based) character position and what was
expected there. An unknown parameter is a 400 too, since leaving one comparison out changes what the
rest of the expression means; only ``Prefer: handling=lenient`` drops the whole ``_filter`` instead (as an
unknown parameter is dropped, and left out of the self link). Limits (:mod:`fhir_exchange.search.limits`):
each comparison counts as one criterion (and one value) of the query, a path's dots count as chain
steps, and parentheses nest at most ``max_filter_depth`` deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import FhirError, invalid
from fhir_exchange.search import limits as search_limits
from fhir_exchange.search import registry
from fhir_exchange.search.query import AllOf, AnyOf, Chain, Criterion, Not, Param

OPERATORS = ("eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "sa", "eb", "ap", "pr", "po", "ss", "sb",
             "in", "ni", "re")
PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")
_DELIMS = frozenset('()[]"')


# -- the expression -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    path: str
    op: str
    value: str
    pos: int  # 0-based offset of the path in the filter text


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    item: Node


Node = Comparison | And | Or | Negation


def comparisons(node: Node) -> list[Comparison]:
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Negation):
        return comparisons(node.item)
    return [c for x in node.items for c in comparisons(x)]


class _Parser:
    """Recursive descent over the text (no separate token list: what a token is depends on where it
    stands; a value may contain "(" but a name may not)."""

    def __init__(self, text: str, max_depth: int) -> None:
        self.s = text
        self.i = 0
        self.depth = 0
        self.max_depth = max_depth

    def error(self, expected: str, at: int | None = None) -> FhirError:
        at = self.i if at is None else at
        if at >= len(self.s):
            found = "the end of the filter"
        else:
            word = self._word(at) or self.s[at]
            found = f"'{word[:40]}'"
        return invalid(f"Invalid _filter at position {at + 1}: expected {expected}, found {found}", "_filter")

    def _word(self, at: int) -> str:
        j = at
        while j < len(self.s) and not self.s[j].isspace() and self.s[j] not in _DELIMS:
            j += 1
        return self.s[at:j]

    def _ws(self) -> bool:
        start = self.i
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1
        return self.i > start

    def parse(self) -> Node:
        node = self._or()
        self._ws()
        if self.i < len(self.s):
            raise self.error("'and', 'or' or the end of the filter")
        return node

    def _keyword(self, kw: str) -> bool:
        save = self.i
        self._ws()
        if self._word(self.i).lower() == kw:
            self.i += len(kw)
            return True
        self.i = save
        return False

    def _or(self) -> Node:
        items = [self._and()]
        while self._keyword("or"):
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Node:
        items = [self._unary()]
        while self._keyword("and"):
            items.append(self._unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _group(self) -> Node:
        """``( filter )``, the "(" at the current position."""
        self.depth += 1
        if self.depth > self.max_depth:
            raise search_limits.exceeded("max_filter_depth", "the nesting depth of parentheses in _filter",
                                         self.depth, self.max_depth, "_filter")
        open_at = self.i
        self.i += 1
        node = self._or()
        self._ws()
        if self.i >= len(self.s) or self.s[self.i] != ")":
            raise self.error(f"'and', 'or' or ')' closing the '(' at position {open_at + 1}")
        self.i += 1
        self.depth -= 1
        return node

    def _unary(self) -> Node:
        self._ws()
        if self.i < len(self.s) and self.s[self.i] == "(":
            return self._group()
        word = self._word(self.i)
        if word.lower() == "not":
            self.i += len(word)
            self._ws()
            if self.i >= len(self.s) or self.s[self.i] != "(":
                raise self.error("'(' after 'not'")
            return Negation(self._group())
        return self._comparison()

    def _comparison(self) -> Comparison:
        start = self.i
        m = _PATH.match(self.s, self.i)
        if m is None:
            raise self.error("a parameter name, 'not' or '('")
        path = m.group()
        self.i = m.end()
        if self.s.startswith("[", self.i):
            raise invalid(f"Invalid _filter at position {self.i + 1}: filters on a path step ('{path}[...]') are "
                          "not supported", "_filter", code="not-supported")
        if not self._ws() or self.i >= len(self.s):
            raise self.error(f"a space and an operator after the parameter name '{path}'")
        op_at = self.i
        op = self._word(op_at).lower()
        if op not in OPERATORS:
            raise self.error(f"an operator ({', '.join(OPERATORS)}) after '{path}'", op_at)
        self.i += len(op)
        if not self._ws() or self.i >= len(self.s):
            raise self.error(f"a space and a value after '{path} {op}'")
        return Comparison(path, op, self._value(), start)

    def _value(self) -> str:
        at = self.i
        if self.s[at] == '"':
            j = at + 1
            while j < len(self.s) and self.s[j] != '"':
                j += 2 if self.s[j] == "\\" else 1
            if j >= len(self.s):
                raise self.error("a '\"' closing the string", len(self.s))
            try:
                value = json.loads(self.s[at : j + 1])
            except ValueError:
                raise self.error("a string with JSON escapes only (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                                 at) from None
            self.i = j + 1
            return str(value)
        j = at
        while j < len(self.s) and not self.s[j].isspace() and self.s[j] not in ")]":
            j += 1
        if j == at:
            raise self.error("a value", at)
        self.i = j
        return self.s[at:j]


def parse_expression(text: str, max_depth: int | None = None) -> Node:
    """The expression tree of one ``_filter`` value (400 with the position on a syntax error)."""
    if max_depth is None:
        max_depth = search_limits.current().max_filter_depth
    if not text.strip():
        raise invalid("Invalid _filter: the expression is empty", "_filter")
    return _Parser(text, max_depth).parse()


# -- comparisons as criteria ---------------------------------------------------------------------

Resolve = Callable[[str, str], Criterion]
"""(name, raw value) as a plain search parameter -> its criterion (the search parser's own)."""


def _escape(kind: str, value: str) -> str:
    """``value`` as one raw value of a plain parameter: its separators escaped (search.html#escaping);
    token, quantity and near values keep ``|``, composites ``$`` and ``|`` (their own syntax)."""
    out = value.replace("\\", "\\\\").replace(",", "\\,")
    if kind not in ("token", "quantity", "composite", "special"):
        out = out.replace("|", "\\|")
    if kind != "composite":
        out = out.replace("$", "\\$")
    return out


def _plain(c: Comparison, kind: str) -> tuple[str, str, str | None, bool]:
    """(modifier suffix, raw value, string mode, negate) of the plain parameter meaning ``c``."""
    op, v = c.op, c.value
    if op == "pr":
        if v.lower() not in ("true", "false"):
            raise invalid(f"Invalid _filter at position {c.pos + 1}: '{c.path} pr' takes true or false, not '{v}'",
                          "_filter")
        return ":missing", "false" if v.lower() == "true" else "true", None, False
    raw = _escape(kind, v)
    if kind in ("date", "number", "quantity") and op in PREFIXES:
        return "", op + raw, None, False
    if kind == "string":
        table: dict[str, tuple[str, str | None, bool]] = {
            "eq": ("", "eq", False), "ne": ("", "eq", True), "co": (":contains", None, False),
            "sw": ("", None, False), "ew": ("", "ew", False)}
        if op in table:
            suffix, mode, negate = table[op]
            return suffix, raw, mode, negate
    elif kind == "token":
        suffixes = {"eq": "", "ne": ":not", "in": ":in", "ni": ":not-in", "ss": ":below", "sb": ":above"}
        if op in suffixes:
            return suffixes[op], raw, None, False
    elif kind in ("reference", "uri", "composite"):
        if op in ("eq", "ne") or (op == "re" and kind == "reference"):
            return "", raw, None, op == "ne"
        if op == "sw" and kind == "uri":
            return ":below", raw, None, False
    elif kind == "special" and op == "eq":
        return "", raw, None, False
    raise invalid(f"Invalid _filter at position {c.pos + 1}: the operator '{op}' is not supported on the {kind} "
                  f"parameter '{c.path}'", "_filter", code="not-supported")


def _kind(defs: Definitions, types: Sequence[str], path: str) -> str | None:
    """The type of the parameter a path ends in (None: its first name is unknown). On a chain, the
    first target type having the next name decides, as in the search parser's chains."""
    code, dot, rest = path.partition(".")
    sp = (registry.params_for(defs, types[0]) if types else registry.common_params(defs)).get(code)
    if sp is None:
        return None
    if not dot or sp.type != "reference":
        return sp.type  # a chain on a non-reference: the search parser says so
    inner = rest.partition(".")[0]
    for t in registry.reference_targets(sp, defs):
        if inner in registry.params_for(defs, t):
            return _kind(defs, [t], rest) or "string"
    return "string"  # no target has it: the search parser names the unknown chained parameter


def _with_mode(c: Criterion, mode: str) -> Criterion:
    """``c`` (a string parameter, or a chain ending in one) with the string mode ``eq``/``ew``."""
    if isinstance(c, Param):
        return replace(c, modifier=mode)
    if isinstance(c, Chain):
        return replace(c, criterion=_with_mode(c.criterion, mode))
    return c


class Budget:
    """The criteria of one query, counted with each ``_filter``'s comparisons (limit ``max_criteria``)."""

    def __init__(self, limits: search_limits.SearchLimits, criteria: int) -> None:
        self.limits = limits
        self.criteria = criteria  # each _filter counted as one so far

    def take(self, comparisons: int) -> None:
        self.criteria += comparisons - 1
        search_limits.check(self.limits, "max_criteria",
                            "the number of search criteria (each comparison of _filter counted)", self.criteria,
                            "_filter")


def criteria(defs: Definitions, types: Sequence[str], text: str, resolve: Resolve, budget: Budget,
             lenient: bool = False) -> tuple[Criterion, ...] | None:
    """The criteria (ANDed) of one ``_filter`` value on resources of ``types`` (the searched type, or
    the ``_type`` list of a system search; none: the common parameters). None: drop the filter (an
    unknown parameter with ``lenient``)."""
    limits = budget.limits
    tree = parse_expression(text, limits.max_filter_depth)
    leaves = comparisons(tree)
    budget.take(len(leaves))
    search_limits.check(limits, "max_values_total", "the number of comparisons of _filter", len(leaves), "_filter")
    kinds: dict[Comparison, str] = {}
    for c in leaves:
        search_limits.check(limits, "max_chain_depth", f"the chain depth of '{c.path}' in _filter",
                            c.path.count("."), "_filter")
        kind = _kind(defs, types, c.path)
        if kind is None:
            if lenient:
                return None
            raise invalid(f"Unknown or unsupported search parameter '{c.path}' in _filter at position {c.pos + 1}",
                          "_filter", code="not-supported")
        kinds[c] = kind

    def build(node: Node) -> Criterion:
        if isinstance(node, Comparison):
            suffix, raw, mode, negate = _plain(node, kinds[node])
            path = node.path
            try:
                crit = resolve(path + suffix, raw)
            except FhirError as err:
                raise invalid(f"Invalid _filter at position {node.pos + 1}: {err.diagnostics}", "_filter",
                              code=err.issues[0].code if err.issues else "invalid") from None
            if mode is not None:
                crit = _with_mode(crit, mode)
            return Not(crit) if negate else crit
        if isinstance(node, Negation):
            return Not(build(node.item))
        items = tuple(build(x) for x in node.items)
        return AllOf(items) if isinstance(node, And) else AnyOf(items)

    if isinstance(tree, And):  # the top-level conjunction: plain criteria of the query (a store may drive by one)
        return tuple(build(x) for x in tree.items)
    return (build(tree),)
