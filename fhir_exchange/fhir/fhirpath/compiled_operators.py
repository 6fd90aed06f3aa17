"""Paths, type tests and operators of the compiled back-end (:mod:`compiled`), as closures over raw JSON.

One closure per operator (not one that tests the operator on every evaluation): invariants run on
nearly every element, and those tests were a measurable share of their cost.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from fhir_exchange.fhir.fhirpath.compiled_values import (
    CHOICE_NAMES,
    RESOURCE_TYPES,
    Collection,
    Env,
    Fn,
    Truth,
    Unsupported,
    boolean,
    children,
    compare,
    eq,
    equiv,
    identity,
    looks_temporal,
    tag,
    truth,
    unique,
)

# The resources that are no DomainResource (no text, contained or extensions).
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})
_ORDER: dict[str, Callable[[int, int], bool]] = {"<": operator.lt, ">": operator.gt, "<=": operator.le,
                                                 ">=": operator.ge}


def type_filter(base: Fn, name: str) -> Fn:
    """A type name at the start of a path (``Patient.name``): the focus if it is that resource."""
    if name not in RESOURCE_TYPES or name == "DomainResource":
        raise Unsupported(f"type name {name} at the start of a path")
    any_resource = name == "Resource"

    def typed(c: Collection, env: Env) -> Collection:
        out: Collection = []
        for x in base(c, env):
            if type(x) is not dict or "resourceType" not in x:
                raise Unsupported("type-name step on an element")
            if any_resource or x["resourceType"] == name:
                out.append(x)
        return out
    return typed


def path(base: Fn, name: str) -> Fn:
    if name[:1].isupper():
        raise Unsupported(f"type name {name} inside a path")

    if base is identity:
        # The common first step: the focus is almost always one object.
        def first_step(c: Collection, env: Env) -> Collection:
            if len(c) == 1:
                x = c[0]
                # The common hit inline (what children does when the key holds a value).
                if type(x) is dict:
                    v = x.get(name)
                    if v is not None:
                        if type(v) is not list:
                            return [v]
                        # A copy (callers own their collections); nulls only in arrays of primitives.
                        return v[:] if None not in v else [y for y in v if y is not None]
                return children(x, name)
            out: Collection = []
            for x in c:
                out.extend(children(x, name))
            return out
        return tag(first_step, step_of=(base, name))

    # ``a.b.c``: one loop over the names after the first step, not a closure call per step.
    root, names = getattr(base, "chain_of", (base, ()))
    names = (*names, name)

    def steps(c: Collection, env: Env) -> Collection:
        items = root(c, env)
        for key in names:
            if not items:
                return []
            out: Collection = []
            for x in items:
                if type(x) is dict:
                    v = x.get(key)
                    if v is None:
                        out.extend(children(x, key))  # a choice element, a primitive's _key
                    elif type(v) is list:
                        out.extend(v if None not in v else [y for y in v if y is not None])
                    else:
                        out.append(v)
            items = out
        return items
    # Remembered so that ``value.ofType(Quantity)`` can compile to the key ``valueQuantity``.
    return tag(steps, step_of=(base, name), chain_of=(root, names))


def type_fn(base: Fn, op: str, type_name: str) -> Fn:
    """``ofType``/``is``/``as`` for what raw JSON can tell: resource types (``resourceType``) and the
    type of a choice element reached by its name (``value.ofType(Quantity)`` is ``valueQuantity``)."""
    if type_name in RESOURCE_TYPES:
        def matches(x: Any) -> bool:
            if type(x) is not dict or "resourceType" not in x:
                return False
            if type_name == "Resource":
                return True
            if type_name == "DomainResource":
                return x["resourceType"] not in _NOT_DOMAIN
            return bool(x["resourceType"] == type_name)
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
    if step_of is None or step_of[1] not in CHOICE_NAMES:
        raise Unsupported(f"{op}({type_name}) needs the FHIR type of non-choice elements")
    inner, name = step_of
    key = name + type_name[:1].upper() + type_name[1:]

    def variant(c: Collection, env: Env) -> Collection:
        out: Collection = []
        for x in inner(c, env):
            out.extend(children(x, key) if type(x) is dict and (key in x or "_" + key in x) else ())
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


def indexer(base: Fn, index: Fn) -> Fn:
    def run(c: Collection, env: Env) -> Collection:
        items = base(c, env)
        idx = index(c, env)
        if not idx or type(idx[0]) is not int:
            return []
        i = idx[0]
        return [items[i]] if 0 <= i < len(items) else []
    return run




def _logic(op: str, lt: Truth, rt: Truth) -> Truth:
    """Three-valued ``and``/``or``/``implies``/``xor`` (fhirpath.html#boolean-logic) over the
    operands' truths; ``and``, ``or`` and ``implies`` leave the right one unevaluated when the
    left one decides."""
    if op == "and":
        def logic_and(c: Collection, env: Env) -> bool | None:
            a = lt(c, env)
            if a is False:
                return False
            b = rt(c, env)
            if a is True and b is True:
                return True
            return False if b is False else None
        return logic_and
    if op == "or":
        def logic_or(c: Collection, env: Env) -> bool | None:
            a = lt(c, env)
            if a is True:
                return True
            b = rt(c, env)
            if b is True:
                return True
            return False if a is False and b is False else None
        return logic_or
    if op == "implies":
        def logic_implies(c: Collection, env: Env) -> bool | None:
            a = lt(c, env)
            if a is False:
                return True
            b = rt(c, env)
            if a is None:
                return True if b is True else None
            return b
        return logic_implies

    def logic_xor(c: Collection, env: Env) -> bool | None:
        a = lt(c, env)
        b = rt(c, env)
        return None if a is None or b is None else a != b
    return logic_xor


def binary(op: str, left: Fn, right: Fn) -> Fn:
    # One closure per operator, not one that tests ``op`` on every evaluation: invariants run on
    # nearly every element, and these comparisons were a measurable share of their cost.
    if op in ("and", "or", "implies", "xor"):
        return boolean(_logic(op, truth(left), truth(right)))
    if op == "|":
        return lambda c, env: unique(left(c, env) + right(c, env))
    k = getattr(right, "const", None)
    lit = k[0] if k is not None and len(k) == 1 else None
    if op in ("=", "!=") and (type(lit) is int or (type(lit) is str and not looks_temporal(lit))):
        # ``status = 'completed'``, ``count() = 1``: one string against a literal that is no date,
        # one integer against an integer, is plain ``==`` (no precision question); anything else
        # goes the general way below.
        negate = op == "!="
        lit_type = type(lit)

        def equals_literal(c: Collection, env: Env) -> bool | None:
            a = left(c, env)
            if not a:
                return None
            if len(a) == 1 and type(a[0]) is lit_type:
                return (a[0] == lit) is not negate
            same = len(a) == 1 and eq(a[0], lit)
            return same is not negate
        return boolean(equals_literal)
    if op in ("=", "!=", "~", "!~"):
        if op in ("~", "!~"):
            negate = op == "!~"

            def equivalence(c: Collection, env: Env) -> bool | None:
                a, b = left(c, env), right(c, env)
                if not a and not b:
                    same = True
                elif len(a) != len(b):
                    same = False
                else:
                    same = all(equiv(x, y) for x, y in zip(a, b, strict=True))
                return same is not negate
            return boolean(equivalence)
        negate = op == "!="

        def equality(c: Collection, env: Env) -> bool | None:
            a, b = left(c, env), right(c, env)
            if not a or not b:
                return None
            same = len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b, strict=True))
            return same is not negate
        return boolean(equality)
    if op in ("<", ">", "<=", ">="):
        test = _ORDER[op]

        def ordering(c: Collection, env: Env) -> bool | None:
            a, b = left(c, env), right(c, env)
            if not a or not b:
                return None
            if len(a) > 1 or len(b) > 1:
                raise Unsupported("comparison of collections")
            r = compare(a[0], b[0])
            return None if r is None else test(r, 0)
        return boolean(ordering)
    if op in ("in", "contains"):
        # The collection searched is only read: a shared one is taken without a copy.
        if op == "in":
            right = getattr(right, "read_only", right)
        else:
            left = getattr(left, "read_only", left)

        def member(c: Collection, env: Env) -> bool | None:
            a, b = left(c, env), right(c, env)
            needle, hay = (a, b) if op == "in" else (b, a)
            if not needle:
                return None
            if len(needle) > 1:
                raise Unsupported("membership of a collection")
            x = needle[0]
            if type(x) is str and not looks_temporal(x):
                # ``eq`` of a string that is no date is ``==`` against strings and false against
                # anything else, which is what Python's ``in`` does: no per-item call (Bundle
                # constraints test every reference against every fullUrl).
                return x in hay
            return any(eq(x, y) for y in hay)
        return boolean(member)
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
