"""Paths, type tests and operators of the compiled back-end (:mod:`compiled`), as closures over raw JSON.

One closure per operator (not one that tests the operator on every evaluation): invariants run on
nearly every element, and those tests were a measurable share of their cost.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

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
_NOT_DOMAIN: Final = frozenset({"Bundle", "Binary", "Parameters"})
_ORDER: Final[dict[str, Callable[[int, int], bool]]] = {"<": operator.lt, ">": operator.gt, "<=": operator.le,
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


def _step(items: Collection, key: str, extension_key: str, choice: bool) -> Collection:
    """One name of a chain over ``items``: nulls of arrays dropped; only a choice name, or a
    primitive's ``_key`` there, sends an absent key to ``children``."""
    out: Collection = []
    for x in items:
        if type(x) is dict:
            v = x.get(key)
            if v is None:
                if choice or extension_key in x:
                    out.extend(children(x, key))  # a choice element, a primitive's _key
            elif type(v) is list:
                out.extend(v if None not in v else [y for y in v if y is not None])
            else:
                out.append(v)
    return out


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
        return tag(first_step, step_of=(base, name), chain_of=(identity, (name,)))

    # ``a.b.c``: one loop over the names, not a closure call per step; from the focus itself when
    # the chain starts there (the first name read from the focus's items without copying a list).
    root, names = getattr(base, "chain_of", (base, ()))
    rooted = root is identity
    names = (*names, name)
    # Per name: its ``_name`` and whether the plain name may be a choice element; only then (or
    # with the ``_name`` key there) can an absent key still give something (``children``).
    keys = tuple((key, "_" + key, key in CHOICE_NAMES) for key in names)
    last_key, last_extension, last_choice = keys[-1]
    inner = keys[:-1]

    def steps(c: Collection, env: Env) -> Collection:
        items = c if rooted else root(c, env)  # only read, never changed
        for key, extension_key, choice in keys:
            if not items:
                return []
            items = _step(items, key, extension_key, choice)
        return items

    def nonempty(c: Collection, env: Env) -> bool:
        """``bool(steps(c, env))`` without building the last step's collection."""
        items = c if rooted else root(c, env)
        for key, extension_key, choice in inner:
            if not items:
                return False
            items = _step(items, key, extension_key, choice)
        for x in items:
            if type(x) is dict:
                v = x.get(last_key)
                if v is None:
                    if (last_choice or last_extension in x) and children(x, last_key):
                        return True
                elif type(v) is not list or any(y is not None for y in v):
                    return True
        return False
    # Remembered so that ``value.ofType(Quantity)`` can compile to the key ``valueQuantity``.
    return tag(steps, step_of=(base, name), chain_of=(root, names), nonempty=nonempty)


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
            def is_resource(c: Collection, env: Env) -> bool | None:
                items = base(c, env)
                if not items:
                    return None
                if len(items) > 1:
                    raise Unsupported("is() on a collection")
                return matches(items[0])
            return boolean(is_resource)
        if type_name not in ("Resource", "DomainResource"):
            # ``entry.resource.ofType(Task)``: one comparison per item, no call.
            def of_resource_type(c: Collection, env: Env) -> Collection:
                return [x for x in base(c, env) if type(x) is dict and x.get("resourceType") == type_name]
            return of_resource_type
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
        def is_variant(c: Collection, env: Env) -> bool | None:
            items = base(c, env)
            if not items:
                return None
            if len(items) > 1:
                raise Unsupported("is() on a collection")
            return bool(variant(c, env))
        return boolean(is_variant)
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


def _logic_chain(op: str, terms: tuple[Truth, ...]) -> Truth:
    """``a or b or c ...`` (``and`` alike) as one loop: three-valued ``or`` is associative, and the
    loop evaluates the terms in order up to the first that decides, as the nested pairs do."""
    decides = op == "or"  # the value of one term that decides the whole: True for or, False for and

    def logic_chain(c: Collection, env: Env) -> bool | None:
        unknown = False
        for term in terms:
            v = term(c, env)
            if v is decides:
                return decides
            if v is None:
                unknown = True
        return None if unknown else not decides
    return logic_chain


def _keys_equal(tests: tuple[tuple[str, Any, type, bool], ...], general: Truth) -> Truth:
    """``system = 'http://loinc.org' and code = '1234-5'`` on a Coding (where() criteria): the keys
    compared with their literals in one call while each holds a value of its literal's type; on
    anything else (a key absent, a list, another type) the general chain decides. The tests are
    pure, so stopping at the first false one is what the chain does."""
    def keys_equal(c: Collection, env: Env) -> bool | None:
        if len(c) == 1:
            x = c[0]
            if type(x) is dict:
                for key, lit, lit_type, negate in tests:
                    v = x.get(key)
                    if type(v) is not lit_type:
                        return general(c, env)
                    if (v == lit) is negate:
                        return False
                return True
        return general(c, env)
    return keys_equal


def binary(op: str, left: Fn, right: Fn) -> Fn:
    # One closure per operator, not one that tests ``op`` on every evaluation: invariants run on
    # nearly every element, and these comparisons were a measurable share of their cost.
    if op in ("or", "and"):
        # ``a or b or c`` parses as ``(a or b) or c``: one loop over the terms, not nested calls.
        chain = getattr(left, "chain_terms", None)
        if chain is not None and chain[0] == op:
            terms, literals = (*chain[1], truth(right)), (*chain[2], getattr(right, "key_literal", None))
        else:
            terms = (truth(left), truth(right))
            literals = (getattr(left, "key_literal", None), getattr(right, "key_literal", None))
        logic = _logic(op, terms[0], terms[1]) if len(terms) == 2 else _logic_chain(op, terms)
        if op == "and" and None not in literals:
            logic = _keys_equal(literals, logic)
        return tag(boolean(logic), chain_terms=(op, terms, literals))
    if op in ("implies", "xor"):
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

        step = getattr(left, "step_of", None)
        if step is not None and step[0] is identity and step[1] not in CHOICE_NAMES:
            # ``system = 'http://loinc.org'`` on a Coding: the key read directly when it holds a
            # value of the literal's type, or nothing at all (neither it nor its ``_key``).
            key, extension_key = step[1], "_" + step[1]

            def equals_literal_key(c: Collection, env: Env) -> bool | None:
                if len(c) == 1:
                    x = c[0]
                    if type(x) is dict:
                        v = x.get(key)
                        if type(v) is lit_type:
                            return (v == lit) is not negate
                        if v is None and extension_key not in x:
                            return None
                a = left(c, env)
                if not a:
                    return None
                same = len(a) == 1 and eq(a[0], lit)
                return same is not negate
            return tag(boolean(equals_literal_key), key_literal=(key, lit, lit_type, negate))

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
        lt, rt = getattr(left, "truth", None), getattr(right, "truth", None)
        if lt is not None and rt is not None:
            # Both sides at most one boolean (``request.exists() = (%resource.type = 'batch' or
            # ...)``): their truths compared, both evaluated as before.
            def boolean_equality(c: Collection, env: Env) -> bool | None:
                a, b = lt(c, env), rt(c, env)
                if a is None or b is None:
                    return None
                return (a is b) is not negate
            return boolean(boolean_equality)

        def equality(c: Collection, env: Env) -> bool | None:
            a, b = left(c, env), right(c, env)
            if not a or not b:
                return None
            if len(a) == 1:
                same = len(b) == 1 and eq(a[0], b[0])
            else:
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
            if type(x) is str and not (x[:4].isdigit() and looks_temporal(x)):
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
