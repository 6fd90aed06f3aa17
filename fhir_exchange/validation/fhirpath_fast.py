"""A fast FHIRPath subset for invariants: http://hl7.org/fhirpath/N1/ (R4 conformance-rules.html#constraints).

Invariants are evaluated on nearly every element of every resource, and a general FHIRPath engine
(fhirpathpy: ~80 µs for ``name.exists() or telecom.exists()``) would cost more than the whole rest of
validation. Almost all core invariants use a small part of the language: paths, ``exists``/``empty``/
``count``/``all``/``where``/``select``, boolean logic, comparisons of strings and numbers. This module
compiles that subset once into Python closures over the raw JSON (a few µs per evaluation).

Types are known only where raw JSON tells them: ``ofType``/``is``/``as`` of resource types, and of a
choice element reached by its name (``value.ofType(Quantity)`` reads ``valueQuantity``); ``resolve()``
uses the resolver the caller puts in the environment (``%resolve``: contained and Bundle resources).
Anything beyond — types of other elements, ``memberOf()``, date arithmetic, unknown functions or
variables — raises :class:`Unsupported`, at compile time or (for values such as dates of different
precision) at run time; the caller then uses the full engine. A test compares both engines on every
invariant site of a corpus, so the subset cannot drift silently.

Semantics follow the spec: collections everywhere, three-valued ``and``/``or``/``implies``/``not``,
``=`` on empty collections is empty, singleton evaluation of collections for operators.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_exchange.fhir.fhirpath.ucum import compare_quantities
from fhir_exchange.validation.values import temporal as _temporal

UCUM = "http://unitsofmeasure.org"

Collection = list[Any]
Env = dict[str, Any]
Fn = Callable[[Collection, Env], Collection]


class Unsupported(Exception):
    """The expression (or this evaluation of it) needs the full FHIRPath engine."""


# -- lexer ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    \s+|//[^\n]*|/\*.*?\*/
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<date>@[0-9T:\-+.Z]+)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<bt>`[^`]*`)
  | (?P<var>%[A-Za-z][A-Za-z0-9_\-]*|%`[^`]*`)
  | (?P<dollar>\$this|\$index|\$total)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[=~<>|&+\-*/(),.\[\]{}])
""", re.X | re.S)

_ESC = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u" else _ESC.get(m.group(1),
                                                                                               m.group(1)), s)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise Unsupported(f"cannot tokenise at {expr[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue
        text = m.group(kind)
        out.append((kind, text))
    out.append(("eof", ""))
    return out


# -- evaluation helpers ---------------------------------------------------------------------------

def _choice_names() -> frozenset[str]:
    """Names of the R4 choice elements (value, onset, deceased...), from fhirpathpy's R4 model."""
    from fhirpathpy.models import models

    return frozenset(k.rsplit(".", 1)[-1] for k in models["r4"]["choiceTypePaths"])


def _resource_types() -> frozenset[str]:
    from fhirpathpy.models import models

    parents = models["r4"]["type2Parent"]
    return frozenset({t for t, p in parents.items() if p in ("DomainResource", "Resource")}
                     | {"Resource", "DomainResource"})


# Only these need the search for ``name`` + Type among an object's keys.
_CHOICE_NAMES = _choice_names()
_RESOURCE_TYPES = _resource_types()

def _children(item: Any, name: str) -> Collection:
    if type(item) is not dict:
        return []
    v = item.get(name)
    if v is None:
        if name not in _CHOICE_NAMES:
            comp = item.get("_" + name)
            if comp is None:
                return []
            # A primitive with only extensions exists, though it has no value (json.html#primitive).
            return [c for c in comp if c is not None] if type(comp) is list else [comp]
        # A choice element is navigated by its plain name: value → valueQuantity.
        n = len(name)
        for k, val in item.items():
            if len(k) > n and k.startswith(name) and k[n].isupper():
                v = val
                break
        else:
            if "_" + name in item:
                # A primitive with only extensions exists, though it has no value (json.html#primitive).
                comp = item["_" + name]
                return [c for c in comp if c is not None] if type(comp) is list else [comp]
            return []
    if type(v) is list:
        return [x for x in v if x is not None]
    return [v]


def _singleton_bool(c: Collection) -> bool | None:
    if not c:
        return None
    if len(c) > 1:
        raise Unsupported("boolean of a collection of more than one")
    v = c[0]
    if type(v) is bool:
        return v
    return True  # a single non-boolean item counts as true (fhirpath.html#singleton)


def _eq(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is str and type(b) is str:
        if _looks_temporal(a) and _looks_temporal(b) and len(a) != len(b):
            raise Unsupported("date equality across precisions")
        return a == b
    return bool(a == b)


_TEMPORAL = re.compile(r"\d{4}(-\d\d(-\d\d(T[\d:.]+(Z|[+-]\d\d:\d\d)?)?)?)?$")


def _looks_temporal(s: str) -> bool:
    return len(s) >= 4 and s[:4].isdigit() and _TEMPORAL.match(s) is not None


def _compare(a: Any, b: Any) -> int | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and type(a) is not bool and type(b) is not bool:
        return (a > b) - (a < b)
    if type(a) is str and type(b) is str:
        if _looks_temporal(a) or _looks_temporal(b):
            ta, tb = _temporal(a), _temporal(b)
            # Different precisions may be incomparable (empty) in FHIRPath: the full engine decides.
            if ta is None or tb is None or ta[1] != tb[1]:
                raise Unsupported("date comparison across precisions")
            return (ta[0] > tb[0]) - (ta[0] < tb[0])
        return (a > b) - (a < b)
    if type(a) is dict and type(b) is dict:
        if "value" not in a or "value" not in b:
            return None  # a Quantity without a value has nothing to order by: empty
        return _compare_quantities(a, b)
    raise Unsupported("comparison of non-primitive values")


def _compare_quantities(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """Quantities (fhirpath.html#comparison): same unit, or UCUM units this module can convert;
    units that cannot be converted make the comparison empty (None)."""
    ua = (a.get("system"), a.get("code") or a.get("unit"))
    ub = (b.get("system"), b.get("code") or b.get("unit"))
    if ua == ub:
        return _compare(a["value"], b["value"])
    if ua[0] != UCUM or ub[0] != UCUM:
        return None  # a non-UCUM unit is comparable only with itself
    try:
        r = compare_quantities(Decimal(str(a["value"])), str(ua[1]), Decimal(str(b["value"])), str(ub[1]))
    except InvalidOperation:
        return None
    if r is None:
        raise Unsupported("UCUM units beyond the local subset")
    return r


def _key(x: Any) -> tuple[str, Any] | None:
    """A hashable stand-in for FHIRPath equality of primitives (None for complex values)."""
    t = type(x)
    if t is bool:
        return ("b", x)
    if t is int or t is float:
        return ("n", x)  # 1 and 1.0 hash and compare equal, as FHIRPath wants
    if t is str:
        return ("s", x)
    return None


def _unique(c: Collection) -> Collection:
    if len(c) < 2:
        return list(c)
    keys = [_key(x) for x in c]
    if None not in keys:
        seen: set[tuple[str, Any] | None] = set()
        out: Collection = []
        for x, k in zip(c, keys, strict=True):
            if k not in seen:
                seen.add(k)
                out.append(x)
        return out
    out = []
    for x in c:
        if not any(_eq(x, y) for y in out):
            out.append(x)
    return out


# -- parser ---------------------------------------------------------------------------------------

_BINARY = {
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6, "|": 7,
    "is": 8, "as": 8, "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}


class _Parser:
    def __init__(self, expr: str) -> None:
        self.toks = _tokens(expr)
        self.i = 0
        # Element names the expression reads from its focus (conservatively: every name that starts
        # a path anywhere, arguments included); None once it reads the focus as a whole.
        self.names: set[str] | None = set()
        # How many per-item criteria (where/all/select/exists) enclose the part being parsed:
        # only there is a focus-free part evaluated more than once per environment.
        self.per_item = 0

    def _reads(self, name: str | None) -> None:
        if self.names is not None:
            if name is None:
                self.names = None
            else:
                self.names.add(name)

    def shared(self, fn: Fn) -> Fn:
        return _shared(fn) if self.per_item else fn

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> None:
        t = self.take()
        if t[1] != text:
            raise Unsupported(f"expected {text!r}, got {t[1]!r}")

    def parse(self) -> Fn:
        fn = self.expr(0)
        if self.peek()[0] != "eof":
            raise Unsupported(f"trailing {self.peek()[1]!r}")
        return fn

    def expr(self, min_prec: int) -> Fn:
        left = self.unary()
        while True:
            kind, text = self.peek()
            prec = _BINARY.get(text) if kind in ("op", "id") else None
            if prec is None or prec <= min_prec - 1 or prec < min_prec:
                return left
            self.take()
            if text in ("is", "as"):
                left = _free_if(_type_fn(left, text, self.type_name()), _free(left))
                continue
            right = self.expr(prec + 1)
            if text == "|" and hasattr(left, "const") and hasattr(right, "const"):
                # A union of literals (``'draft' | 'requested' | ...``) is folded once, here.
                left = _const(_unique(left.const + right.const))
                continue
            free = _free(left) and _free(right)
            if not free:
                left, right = self.shared(left), self.shared(right)
            left = _free_if(_binary(text, left, right), free)

    def unary(self) -> Fn:
        kind, text = self.peek()
        if kind == "op" and text in ("-", "+"):
            self.take()
            inner = self.unary()
            if text == "+":
                return inner

            def neg(c: Collection, env: Env) -> Collection:
                return [-x for x in inner(c, env) if isinstance(x, (int, float))]
            return _free_if(neg, _free(inner))
        return self.postfix(self.term())

    def postfix(self, fn: Fn) -> Fn:
        while True:
            _, text = self.peek()
            if text == ".":
                self.take()
                fn = self.invocation(fn)
            elif text == "[":
                self.take()
                index = self.expr(0)
                self.expect("]")
                free = _free(fn) and _free(index)
                if not free:
                    fn, index = self.shared(fn), self.shared(index)
                fn = _free_if(_indexer(fn, index), free)
            else:
                return fn

    def term(self) -> Fn:
        kind, text = self.take()
        if kind == "str":
            s = _unescape(text[1:-1])
            return _tag(_const([s]), string_literal=s)
        if kind == "num":
            return _const([float(text) if "." in text else int(text)])
        if kind == "date":
            raise Unsupported("date literals")
        if kind == "dollar":
            if text != "$this":
                raise Unsupported(text)
            self._reads(None)
            return _identity
        if kind == "var":
            name = text[1:]
            if name == "ucum":
                return _const([UCUM])
            if name not in ("resource", "rootResource", "context"):
                raise Unsupported(f"variable {text}")
            self._reads(None)

            def variable(c: Collection, env: Env) -> Collection:
                return env[name]
            return _tag(variable, focus_free=True, trivial=True)
        if kind == "op" and text == "(":
            inner = self.expr(0)
            self.expect(")")
            return inner
        if kind == "op" and text == "{":
            self.expect("}")
            return _const([])
        if kind in ("id", "bt"):
            name = text.strip("`")
            if name in ("true", "false") and kind == "id":
                return _const([name == "true"])
            if self.peek()[1] == "(":
                # A function of the focus itself reads all of it, except extension(url).
                self._reads("extension" if name == "extension" else None)
                return self.function(_identity, name)
            self._reads(name if name[:1].islower() else None)
            return _path(_identity, name)
        raise Unsupported(f"unexpected {text!r}")

    def invocation(self, base: Fn) -> Fn:
        kind, text = self.take()
        if kind not in ("id", "bt"):
            raise Unsupported(f"cannot invoke {text!r}")
        name = text.strip("`")
        if self.peek()[1] == "(":
            return self.function(base, name)
        return _free_if(_path(base, name), _free(base))

    def type_name(self) -> str:
        kind, text = self.take()
        if kind not in ("id", "bt"):
            raise Unsupported(f"type name expected, got {text!r}")
        name = text.strip("`")
        if name in ("FHIR", "System") and self.peek()[1] == ".":
            self.take()
            if name == "System":
                raise Unsupported("System types")
            name = self.take()[1].strip("`")
        return name

    def function(self, base: Fn, name: str) -> Fn:
        self.expect("(")
        if name in ("ofType", "is", "as"):
            type_name = self.type_name()
            self.expect(")")
            return _free_if(_type_fn(base, name, type_name), _free(base))
        args: list[Fn] = []
        per_item = name in _PER_ITEM
        self.per_item += per_item
        if self.peek()[1] != ")":
            args.append(self.expr(0))
            while self.peek()[1] == ",":
                self.take()
                args.append(self.expr(0))
        self.expect(")")
        self.per_item -= per_item
        # The criteria of these are evaluated on each item, never on the outer focus.
        free = _free(base) and (name in _PER_ITEM or all(_free(a) for a in args))
        if not free:
            # A per-item function evaluates its arguments once per item.
            base, args = self.shared(base), [_shared(a) if per_item else self.shared(a) for a in args]
        return _free_if(_function(base, name, args), free)


def _identity(c: Collection, env: Env) -> Collection:
    return c


# Functions whose arguments the subset evaluates on each item of the input, not on the outer focus.
_PER_ITEM = frozenset({"exists", "where", "select", "all"})


def _tag(fn: Fn, **attrs: Any) -> Fn:
    """Attach what later compilation steps read back with ``getattr`` (``const``, ``focus_free``,
    ``trivial``, ``step_of``, ``descendants_of``, ``string_literal``, ``focus_names``): attributes of
    the closure itself, so that evaluating it costs no wrapper call."""
    for attr, value in attrs.items():
        setattr(fn, attr, value)
    return fn


def _const(value: Collection) -> Fn:
    """A constant collection (literals, folded unions of literals)."""
    def const(c: Collection, env: Env) -> Collection:
        return list(value)  # a copy: callers own the collections they are given
    return _tag(const, const=value, focus_free=True, trivial=True)


def _free(fn: Fn) -> bool:
    """Does ``fn`` not read the focus (only literals and ``%resource``/``%rootResource``/``%context``)?"""
    return getattr(fn, "focus_free", False)


def _free_if(fn: Fn, free: bool) -> Fn:
    if free and fn is not _identity:
        _tag(fn, focus_free=True)
    return fn


def _shared(fn: Fn) -> Fn:
    """A focus-free part of a focus-dependent expression, evaluated once per environment.

    ``$this in %resource.entry.fullUrl`` inside an ``all()`` over every reference of a Bundle would
    otherwise walk the Bundle again for each one. The cache lives in the environment, which callers
    make afresh for each node (its %resource, %rootResource and %context are fixed)."""
    if not _free(fn) or getattr(fn, "trivial", False):
        return fn
    token = object()

    def once(c: Collection, env: Env) -> Collection:
        cache = env.get("%shared")
        if cache is None:
            cache = env["%shared"] = {}
        hit = cache.get(token)
        if hit is None:
            hit = cache[token] = fn(c, env)
        return list(hit)  # a copy: callers own the collections they are given
    # What later compilation steps read from the wrapped function: ``value.ofType(Quantity)``
    # compiles from the step, ``descendants().ofType(T)`` from the descendants' base.
    for attr in ("step_of", "descendants_of", "string_literal"):
        if hasattr(fn, attr):
            setattr(once, attr, getattr(fn, attr))
    return _tag(once, focus_free=True, trivial=True)


def _path(base: Fn, name: str) -> Fn:
    if name[:1].isupper():
        # A type name at the start of a path (``Patient.name``) names the context resource.
        def typed(c: Collection, env: Env) -> Collection:
            items = base(c, env)
            out: Collection = []
            for x in items:
                if type(x) is dict and x.get("resourceType") == name:
                    out.append(x)
                elif type(x) is dict and "resourceType" not in x:
                    raise Unsupported("type-name step on an element")
            return out
        return typed

    if base is _identity:
        # The common first step: the focus is almost always one object.
        def first_step(c: Collection, env: Env) -> Collection:
            if len(c) == 1:
                x = c[0]
                # The common hit inline (what _children does when the key holds a value).
                if type(x) is dict:
                    v = x.get(name)
                    if v is not None:
                        return [y for y in v if y is not None] if type(v) is list else [v]
                return _children(x, name)
            out: Collection = []
            for x in c:
                out.extend(_children(x, name))
            return out
        return _tag(first_step, step_of=(base, name))

    def step(c: Collection, env: Env) -> Collection:
        out: Collection = []
        for x in base(c, env):
            out.extend(_children(x, name))
        return out
    # Remembered so that ``value.ofType(Quantity)`` can compile to the key ``valueQuantity``.
    return _tag(step, step_of=(base, name))


def _type_fn(base: Fn, op: str, type_name: str) -> Fn:
    """``ofType``/``is``/``as`` for what raw JSON can tell: resource types (``resourceType``) and the
    type of a choice element reached by its name (``value.ofType(Quantity)`` is ``valueQuantity``)."""
    if type_name in _RESOURCE_TYPES:
        any_resource = type_name in ("Resource", "DomainResource")

        def matches(x: Any) -> bool:
            return type(x) is dict and "resourceType" in x and (any_resource or x["resourceType"] == type_name)
        if op == "is":
            def is_resource(c: Collection, env: Env) -> Collection:
                items = base(c, env)
                if not items:
                    return []
                if len(items) > 1:
                    raise Unsupported("is() on a collection")
                return [matches(items[0])]
            return is_resource
        return lambda c, env: [x for x in base(c, env) if matches(x)]
    below = getattr(base, "descendants_of", None)
    if below is not None and op == "ofType":
        # descendants().ofType(Reference): the element types come from the caller's definitions.
        def typed_descendants(c: Collection, env: Env) -> Collection:
            finder = env.get("%typed_descendants")
            if finder is None:
                raise Unsupported("typed descendants without definitions")
            return list(finder(below(c, env), type_name))
        return typed_descendants
    step_of = getattr(base, "step_of", None)
    if step_of is None or step_of[1] not in _CHOICE_NAMES:
        raise Unsupported(f"{op}({type_name}) needs the FHIR type of non-choice elements")
    inner, name = step_of
    key = name + type_name[:1].upper() + type_name[1:]

    def variant(c: Collection, env: Env) -> Collection:
        out: Collection = []
        for x in inner(c, env):
            out.extend(_children(x, key) if type(x) is dict and (key in x or "_" + key in x) else ())
        return out
    if op == "is":
        def is_variant(c: Collection, env: Env) -> Collection:
            items = base(c, env)
            if not items:
                return []
            if len(items) > 1:
                raise Unsupported("is() on a collection")
            return [bool(variant(c, env))]
        return is_variant
    return variant


def _indexer(base: Fn, index: Fn) -> Fn:
    def run(c: Collection, env: Env) -> Collection:
        items = base(c, env)
        idx = index(c, env)
        if not idx or type(idx[0]) is not int:
            return []
        i = idx[0]
        return [items[i]] if 0 <= i < len(items) else []
    return run


def _binary(op: str, left: Fn, right: Fn) -> Fn:
    # One closure per operator, not one that tests ``op`` on every evaluation: invariants run on
    # nearly every element, and these comparisons were a measurable share of their cost.
    if op == "and":
        def logic_and(c: Collection, env: Env) -> Collection:
            ra = left(c, env)
            a = ra[0] if len(ra) == 1 and type(ra[0]) is bool else _singleton_bool(ra)
            if a is False:
                return [False]
            rb = right(c, env)
            b = rb[0] if len(rb) == 1 and type(rb[0]) is bool else _singleton_bool(rb)
            if a is True and b is True:
                return [True]
            return [False] if b is False else []
        return logic_and
    if op == "or":
        def logic_or(c: Collection, env: Env) -> Collection:
            ra = left(c, env)
            a = ra[0] if len(ra) == 1 and type(ra[0]) is bool else _singleton_bool(ra)
            if a is True:
                return [True]
            rb = right(c, env)
            b = rb[0] if len(rb) == 1 and type(rb[0]) is bool else _singleton_bool(rb)
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        return logic_or
    if op == "implies":
        def logic_implies(c: Collection, env: Env) -> Collection:
            ra = left(c, env)
            a = ra[0] if len(ra) == 1 and type(ra[0]) is bool else _singleton_bool(ra)
            if a is False:
                return [True]
            rb = right(c, env)
            b = rb[0] if len(rb) == 1 and type(rb[0]) is bool else _singleton_bool(rb)
            if a is None:
                return [True] if b is True else []
            return [True] if b is True else ([False] if b is False else [])
        return logic_implies
    if op == "xor":
        def logic_xor(c: Collection, env: Env) -> Collection:
            ra = left(c, env)
            a = ra[0] if len(ra) == 1 and type(ra[0]) is bool else _singleton_bool(ra)
            rb = right(c, env)
            b = rb[0] if len(rb) == 1 and type(rb[0]) is bool else _singleton_bool(rb)
            return [] if a is None or b is None else [a != b]
        return logic_xor
    if op == "|":
        return lambda c, env: _unique(left(c, env) + right(c, env))
    lit = getattr(right, "string_literal", None)
    if op in ("=", "!=") and lit is not None and not _looks_temporal(lit):
        # ``status = 'completed'``: one string against a literal that is no date is plain ``==``
        # (no precision question); anything else goes the general way below.
        negate = op == "!="

        def equals_literal(c: Collection, env: Env) -> Collection:
            a = left(c, env)
            if not a:
                return []
            if len(a) == 1 and type(a[0]) is str:
                return [(a[0] == lit) is not negate]
            same = len(a) == 1 and _eq(a[0], lit)
            return [same is not negate]
        return equals_literal
    if op in ("=", "!=", "~", "!~"):
        def equality(c: Collection, env: Env) -> Collection:
            a, b = left(c, env), right(c, env)
            if op in ("~", "!~"):
                if not a and not b:
                    same = True
                elif len(a) != len(b):
                    same = False
                else:
                    same = all(_equiv(x, y) for x, y in zip(a, b, strict=True))
                return [same if op == "~" else not same]
            if not a or not b:
                return []
            same = len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
            return [same if op == "=" else not same]
        return equality
    if op in ("<", ">", "<=", ">="):
        def compare(c: Collection, env: Env) -> Collection:
            a, b = left(c, env), right(c, env)
            if not a or not b:
                return []
            if len(a) > 1 or len(b) > 1:
                raise Unsupported("comparison of collections")
            r = _compare(a[0], b[0])
            if r is None:
                return []
            return [{"<": r < 0, ">": r > 0, "<=": r <= 0, ">=": r >= 0}[op]]
        return compare
    if op in ("in", "contains"):
        def member(c: Collection, env: Env) -> Collection:
            a, b = left(c, env), right(c, env)
            needle, hay = (a, b) if op == "in" else (b, a)
            if not needle:
                return []
            if len(needle) > 1:
                raise Unsupported("membership of a collection")
            x = needle[0]
            if type(x) is str and not _looks_temporal(x):
                # ``_eq`` of a string that is no date is ``==`` against strings and false against
                # anything else, which is what Python's ``in`` does: no per-item call (Bundle
                # constraints test every reference against every fullUrl).
                return [x in hay]
            return [any(_eq(x, y) for y in hay)]
        return member
    if op == "&":
        def concat(c: Collection, env: Env) -> Collection:
            a, b = left(c, env), right(c, env)
            return [(str(a[0]) if a else "") + (str(b[0]) if b else "")]
        return concat
    if op in ("+", "-", "*"):
        def arith(c: Collection, env: Env) -> Collection:
            a, b = left(c, env), right(c, env)
            if not a or not b:
                return []
            x, y = a[0], b[0]
            if op == "+" and type(x) is str and type(y) is str:
                return [x + y]
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                return [x + y if op == "+" else x - y if op == "-" else x * y]
            raise Unsupported("arithmetic on non-numbers")
        return arith
    raise Unsupported(f"operator {op}")


def _equiv(a: Any, b: Any) -> bool:
    if type(a) is str and type(b) is str:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return _eq(a, b)


def _arg0(args: list[Fn], name: str) -> Fn:
    if len(args) != 1:
        raise Unsupported(f"{name} with {len(args)} arguments")
    return args[0]


def _string_fn(base: Fn, args: list[Fn], op: Callable[[str, list[Any]], Any]) -> Fn:
    def run(c: Collection, env: Env) -> Collection:
        items = base(c, env)
        if not items:
            return []
        if len(items) > 1:
            raise Unsupported("string function on a collection")
        s = items[0]
        if type(s) is not str:
            raise Unsupported("string function on a non-string")
        vals = []
        for a in args:
            v = a(c, env)
            if not v:
                return []
            vals.append(v[0])
        return [op(s, vals)]
    return run


def _function(base: Fn, name: str, args: list[Fn]) -> Fn:
    if name == "exists":
        if args:
            crit = args[0]
            return lambda c, env: [any(_singleton_bool(crit([x], env)) for x in base(c, env))]
        return lambda c, env: [bool(base(c, env))]
    if name == "empty":
        return lambda c, env: [not base(c, env)]
    if name == "not":
        def negate(c: Collection, env: Env) -> Collection:
            b = _singleton_bool(base(c, env))
            return [] if b is None else [not b]
        return negate
    if name == "count":
        return lambda c, env: [len(base(c, env))]
    if name == "hasValue":
        return lambda c, env: [len(items := base(c, env)) == 1 and type(items[0]) is not dict]
    if name in ("where", "select", "all"):
        crit = _arg0(args, name)
        # One closure per function (no test of ``name`` on each evaluation).
        if name == "where":
            def where(c: Collection, env: Env) -> Collection:
                return [x for x in base(c, env) if _singleton_bool(crit([x], env))]
            return where
        if name == "all":
            def all_(c: Collection, env: Env) -> Collection:
                return [all(_singleton_bool(crit([x], env)) for x in base(c, env))]
            return all_

        def select(c: Collection, env: Env) -> Collection:
            out: Collection = []
            for x in base(c, env):
                out.extend(crit([x], env))
            return out
        return select
    if name == "first":
        return lambda c, env: base(c, env)[:1]
    if name == "last":
        return lambda c, env: base(c, env)[-1:]
    if name == "tail":
        return lambda c, env: base(c, env)[1:]
    if name == "isDistinct":
        return lambda c, env: [len(_unique(items := base(c, env))) == len(items)]
    if name == "distinct":
        return lambda c, env: _unique(base(c, env))
    if name == "trace":
        return base
    if name == "children":
        def children(c: Collection, env: Env) -> Collection:
            out: Collection = []
            for x in base(c, env):
                if type(x) is dict:
                    for k, v in x.items():
                        if k != "resourceType" and not k.startswith("_"):
                            out.extend(v if type(v) is list else [v])
            return out
        return children
    if name == "descendants":
        def descendants(c: Collection, env: Env) -> Collection:
            out: Collection = []
            stack = list(base(c, env))
            while stack:
                x = stack.pop()
                if type(x) is dict:
                    for k, v in x.items():
                        if k != "resourceType" and not k.startswith("_"):
                            for y in v if type(v) is list else [v]:
                                out.append(y)
                                stack.append(y)
            return out
        return _tag(descendants, descendants_of=base)
    if name in ("union", "combine", "intersect", "exclude", "subsetOf", "supersetOf"):
        other = _arg0(args, name)

        def sets(c: Collection, env: Env) -> Collection:
            a, b = base(c, env), other(c, env)
            if name == "union":
                return _unique(a + b)
            if name == "combine":
                return a + b
            if name == "intersect":
                return _unique([x for x in a if any(_eq(x, y) for y in b)])
            if name == "exclude":
                return [x for x in a if not any(_eq(x, y) for y in b)]
            if name == "subsetOf":
                return [all(any(_eq(x, y) for y in b) for x in a)]
            return [all(any(_eq(y, x) for x in a) for y in b)]
        return sets
    if name == "iif":
        if len(args) not in (2, 3):
            raise Unsupported("iif arity")

        def iif(c: Collection, env: Env) -> Collection:
            if _singleton_bool(args[0](c, env)):
                return args[1](c, env)
            return args[2](c, env) if len(args) == 3 else []
        return iif
    if name == "extension":
        url = _arg0(args, name)

        def ext(c: Collection, env: Env) -> Collection:
            u = url(c, env)
            out: Collection = []
            for x in base(c, env):
                for e in _children(x, "extension"):
                    if type(e) is dict and u and e.get("url") == u[0]:
                        out.append(e)
            return out
        return ext
    if name == "startsWith":
        return _string_fn(base, args, lambda s, v: s.startswith(str(v[0])))
    if name == "endsWith":
        return _string_fn(base, args, lambda s, v: s.endswith(str(v[0])))
    if name == "contains":
        return _string_fn(base, args, lambda s, v: str(v[0]) in s)
    if name == "matches":
        return _string_fn(base, args, lambda s, v: re.search(str(v[0]), s, re.DOTALL) is not None)
    if name == "replaceMatches":
        return _string_fn(base, args, lambda s, v: re.sub(str(v[0]), str(v[1]), s))
    if name == "replace":
        return _string_fn(base, args, lambda s, v: s.replace(str(v[0]), str(v[1])))
    if name == "length":
        return _string_fn(base, args, lambda s, v: len(s))
    if name == "lower":
        return _string_fn(base, args, lambda s, v: s.lower())
    if name == "upper":
        return _string_fn(base, args, lambda s, v: s.upper())
    if name == "substring":
        return _string_fn(base, args, lambda s, v: s[v[0]:] if len(v) == 1 else s[v[0]:v[0] + v[1]])
    if name == "toString":
        def to_string(c: Collection, env: Env) -> Collection:
            items = base(c, env)
            if len(items) != 1 or type(items[0]) is dict:
                return [] if not items else _raise("toString of a complex value")
            x = items[0]
            return ["true" if x is True else "false" if x is False else str(x)]
        return to_string
    if name == "toInteger":
        def to_int(c: Collection, env: Env) -> Collection:
            items = base(c, env)
            if len(items) != 1:
                return []
            x = items[0]
            if type(x) is int:
                return [x]
            if type(x) is str and re.fullmatch(r"[+-]?\d+", x):
                return [int(x)]
            if type(x) is bool:
                return [int(x)]
            return []
        return to_int
    if name == "resolve":
        def resolve(c: Collection, env: Env) -> Collection:
            resolver = env.get("%resolve")
            if resolver is None:
                raise Unsupported("resolve() without a resolver")
            out: Collection = []
            for x in base(c, env):
                ref = x if type(x) is str else x.get("reference") if type(x) is dict else None
                if type(ref) is str:
                    target = resolver(ref)
                    if target is not None:
                        out.append(target)
            return out
        return resolve
    if name == "htmlChecks":
        # Narrative XHTML rules are enforced natively by the xhtml module; this invariant defers to it.
        return lambda c, env: [True]
    raise Unsupported(f"function {name}()")


def _raise(msg: str) -> Collection:
    raise Unsupported(msg)


def compile_fast(expression: str) -> Fn:
    """Compile ``expression``; raises :class:`Unsupported` when it is outside the subset.

    The function carries ``focus_names``: the element names it may read from its focus, or None."""
    parser = _Parser(expression)
    fn = parser.parse()
    return _tag(fn, focus_names=frozenset(parser.names) if parser.names is not None else None)


def touches(node: Any, names: frozenset[str]) -> bool:
    """Does ``node`` carry any of ``names`` (a choice name by any of its types, a primitive by ``_name``)?"""
    if type(node) is not dict:
        return True
    for n in names:
        if n in node or ("_" + n) in node:
            return True
        if n in _CHOICE_NAMES:
            size = len(n)
            for k in node:
                if len(k) > size and k.startswith(n) and k[size].isupper():
                    return True
    return False
