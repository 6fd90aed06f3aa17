"""Functions of the compiled back-end (:mod:`compiled`), as closures over raw JSON.

``resolve()``, ``memberOf()`` and ``conformsTo()`` ask the hooks the caller puts in the environment
(``%resolve``, ``%member_of``, ``%conforms_to``), as the full evaluator asks its ``resolver``,
``member_of`` and ``conforms_to``; without a hook they raise :class:`Unsupported` and the full
evaluator decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.compiled_values import (
    CHOICE_NAMES,
    RESOURCE_TYPES,
    Collection,
    Env,
    Fn,
    Unsupported,
    boolean,
    children,
    eq,
    identity,
    looks_temporal,
    tag,
    truth,
    unique,
    unsupported,
)

_CORE_SD: Final = "http://hl7.org/fhir/StructureDefinition/"
_NOT_DOMAIN: Final = frozenset({"Bundle", "Binary", "Parameters"})


def _arg0(args: list[Fn], name: str) -> Fn:
    if len(args) != 1:
        raise Unsupported(f"{name} with {len(args)} arguments")
    return args[0]


def _string_fn(base: Fn, args: list[Fn], op: Callable[[str, list[Any]], Any], predicate: bool = False) -> Fn:
    """A function of one string; ``predicate``: ``op`` answers a bool (startsWith, matches...),
    which boolean contexts take without a list."""
    constants = [getattr(a, "const", None) for a in args]
    fixed = [k[0] for k in constants if k] if all(constants) else None
    # ``reference.startsWith('#')`` (ref-1, on every Reference): the string read from the focus's
    # key directly when it holds one, which is what the path would give, without its list.
    step = getattr(base, "step_of", None)
    key = step[1] if step is not None and step[0] is identity and step[1] not in CHOICE_NAMES else None
    # ``$this.startsWith('#')`` in where()/all() criteria: the focus is the one string.
    this = base is identity and fixed is not None
    literals: list[Any] = fixed if fixed is not None else []

    def value(c: Collection, env: Env) -> Any:
        # The function's one value, None for an empty result (no ``op`` answers None).
        if this and len(c) == 1 and type(c[0]) is str:
            return op(c[0], literals)
        if key is not None and fixed is not None and len(c) == 1 and type(c[0]) is dict:
            direct = c[0].get(key)
            if type(direct) is str:
                return op(direct, fixed)
        items = base(c, env)
        if not items:
            return None
        if len(items) > 1:
            raise Unsupported("string function on a collection")
        s = items[0]
        if type(s) is not str:
            raise Unsupported("string function on a non-string")
        if fixed is not None:
            return op(s, fixed)  # literal arguments: nothing to evaluate
        vals = []
        for a in args:
            v = a(c, env)
            if not v:
                return None
            vals.append(v[0])
        return op(s, vals)
    if predicate:
        def negated(c: Collection, env: Env) -> bool | None:
            # ``startsWith('#').not()`` (ref-1, bdl-8): the negation in the same call.
            if this and len(c) == 1 and type(c[0]) is str:
                return not op(c[0], literals)
            if key is not None and fixed is not None and len(c) == 1 and type(c[0]) is dict:
                direct = c[0].get(key)
                if type(direct) is str:
                    return not op(direct, fixed)
            v = value(c, env)
            return None if v is None else not v
        return tag(boolean(value), negated=negated)

    def run(c: Collection, env: Env) -> Collection:
        v = value(c, env)
        return [] if v is None else [v]
    return run


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        # FHIRPath regexes run in single-line mode: '.' matches newlines (spec: matches()).
        return re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise Unsupported(f"regular expression {pattern!r}: {e}") from e


def _matches(base: Fn, args: list[Fn]) -> Fn:
    literal = getattr(_arg0(args, "matches"), "const", None)
    if literal and type(literal[0]) is str:
        search = _regex(literal[0]).search  # compiled once, with the expression
        return _string_fn(base, args, lambda s, v: search(s) is not None, True)
    return _string_fn(base, args, lambda s, v: _regex(str(v[0])).search(s) is not None, True)


def _presence(base: Fn, exists: bool) -> Fn:
    """``name.exists()`` / ``name.empty()``, answered from the focus's keys without building the
    collection in the common case (one object, the key absent or holding one value)."""
    step = getattr(base, "step_of", None)
    if step is None or step[0] is not identity:
        nonempty = getattr(base, "nonempty", None)
        if nonempty is not None:
            # ``entry.search.empty()``, ``provision.period.start.exists()``: no list of the last step.
            if exists:
                return boolean(nonempty)
            return boolean(lambda c, env: not nonempty(c, env))
        if exists:
            return boolean(lambda c, env: bool(base(c, env)))
        return boolean(lambda c, env: not base(c, env))
    key = step[1]
    extension_key = "_" + key

    if key in CHOICE_NAMES:
        # ``value.empty()`` on a ContactPoint: ``value`` is a choice name elsewhere, but a key that
        # holds one value here is what the path finds (the search for ``valueX`` only without it).
        def choice_presence(c: Collection, env: Env) -> bool:
            if len(c) == 1:
                x = c[0]
                if type(x) is dict:
                    v = x.get(key)
                    if v is not None and type(v) is not list:
                        return exists
            return bool(base(c, env)) is exists
        return boolean(choice_presence)

    def presence(c: Collection, env: Env) -> bool:
        if len(c) == 1:
            x = c[0]
            if type(x) is dict:
                v = x.get(key)
                if v is None:
                    if extension_key not in x:
                        return not exists
                elif type(v) is not list:
                    return exists
        return bool(base(c, env)) is exists
    return boolean(presence)


def _single_with_arg(base: Fn, arg: Fn, c: Collection, env: Env) -> tuple[Any, Any] | None:
    items = base(c, env)
    if not items:
        return None
    if len(items) > 1:
        raise Unsupported("a function of one item on a collection")
    a = arg(c, env)
    return None if not a else (items[0], a[0])


def _member_of(base: Fn, url: Fn) -> Fn:
    def member_of(c: Collection, env: Env) -> Collection:
        pair = _single_with_arg(base, url, c, env)
        if pair is None:
            return []
        hook = env.get("%member_of")
        if hook is None or type(pair[1]) is not str:
            raise Unsupported("memberOf() without a terminology")
        verdict = hook(pair[0], pair[1])
        return [] if verdict is None else [bool(verdict)]
    return member_of


def _conforms_to(base: Fn, url: Fn) -> Fn:
    def conforms_to(c: Collection, env: Env) -> Collection:
        pair = _single_with_arg(base, url, c, env)
        if pair is None:
            return []
        x, target = pair
        if type(x) is not dict or "resourceType" not in x or type(target) is not str:
            raise Unsupported("conformsTo() of an element")
        hook = env.get("%conforms_to")
        if hook is not None:
            return [bool(hook(x, target))]
        if target in (x.get("meta") or {}).get("profile", ()):
            return [True]
        name = target[len(_CORE_SD):] if target.startswith(_CORE_SD) else ""
        if name in RESOURCE_TYPES:
            rt = x["resourceType"]
            return [rt == name or name == "Resource" or (name == "DomainResource" and rt not in _NOT_DOMAIN)]
        raise Unsupported(f"conformsTo({target}) without a profile validator")
    return conforms_to


def function(base: Fn, name: str, args: list[Fn]) -> Fn:
    if name == "exists":
        if args:
            satisfies = truth(args[0])

            def exists_where(c: Collection, env: Env) -> bool:
                for x in base(c, env):  # noqa: SIM110 (a loop: no generator frame per item)
                    if satisfies([x], env):
                        return True
                return False
            return boolean(exists_where)
        return tag(_presence(base, True), presence_of=(base, True))
    if name == "empty":
        return tag(_presence(base, False), presence_of=(base, False))
    if name == "not":
        opposite = getattr(base, "presence_of", None)
        if opposite is not None:
            # ``x.exists().not()`` is ``x.empty()`` (both always one boolean): one closure.
            return tag(_presence(opposite[0], not opposite[1]), presence_of=(opposite[0], not opposite[1]))
        negated = getattr(base, "negated", None)
        if negated is not None:
            return boolean(negated)
        of_base = truth(base)

        def negate(c: Collection, env: Env) -> bool | None:
            b = of_base(c, env)
            return None if b is None else not b
        return boolean(negate)
    if name == "count":
        return lambda c, env: [len(base(c, env))]
    if name == "hasValue":
        step = getattr(base, "step_of", None)
        key = step[1] if step is not None and step[0] is identity and step[1] not in CHOICE_NAMES else None

        def has_value(c: Collection, env: Env) -> bool:
            if key is not None and len(c) == 1 and type(c[0]) is dict:
                v = c[0].get(key)
                if v is not None and type(v) is not list and type(v) is not dict:
                    return True  # ``start.hasValue()`` on a Period: the primitive is there
            items = base(c, env)
            return len(items) == 1 and type(items[0]) is not dict
        # Always one boolean: ``hasValue().not()`` and ``or``/``and`` take its truth.
        return boolean(has_value)
    if name in ("where", "select", "all"):
        crit = _arg0(args, name)
        # One closure per function (no test of ``name`` on each evaluation).
        if name == "where":
            test = truth(crit)

            def where(c: Collection, env: Env) -> Collection:
                return [x for x in base(c, env) if test([x], env)]

            def where_nonempty(c: Collection, env: Env) -> bool:
                # ``where(...).exists()`` without the list; every item is still tested, as where()
                # does (one that cannot be evaluated sends the whole expression to the full evaluator).
                found = False
                for x in base(c, env):
                    if test([x], env):
                        found = True
                return found
            return tag(where, nonempty=where_nonempty)
        if name == "all":
            test = truth(crit)

            def all_(c: Collection, env: Env) -> bool:
                for x in base(c, env):  # noqa: SIM110 (a loop: no generator frame per item)
                    if not test([x], env):
                        return False
                return True
            return boolean(all_)

        def select(c: Collection, env: Env) -> Collection:
            out: Collection = []
            for x in base(c, env):
                out.extend(crit([x], env))
            return out
        return select
    if name == "first":
        step = getattr(base, "step_of", None)
        if step is not None and step[0] is identity:
            key = step[1]

            def first_item(c: Collection, env: Env) -> Collection:
                # ``entry.first()``: the first non-null item of the key's array, without a copy of it.
                if len(c) == 1 and type(c[0]) is dict:
                    v = c[0].get(key)
                    if type(v) is list:
                        for y in v:
                            if y is not None:
                                return [y]
                        return []
                return base(c, env)[:1]
            return first_item
        return lambda c, env: base(c, env)[:1]
    if name == "last":
        return lambda c, env: base(c, env)[-1:]
    if name == "tail":
        return lambda c, env: base(c, env)[1:]
    if name == "isDistinct":
        return lambda c, env: [len(unique(items := base(c, env))) == len(items)]
    if name == "distinct":
        return lambda c, env: unique(base(c, env))
    if name == "trace":
        return base
    if name == "children":
        def children_of(c: Collection, env: Env) -> Collection:
            out: Collection = []
            for x in base(c, env):
                if type(x) is dict:
                    for k, v in x.items():
                        if k != "resourceType" and not k.startswith("_"):
                            out.extend(v if type(v) is list else [v])
            return out
        return children_of
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
        return tag(descendants, descendants_of=base)
    if name in ("union", "combine", "intersect", "exclude", "subsetOf", "supersetOf"):
        other = _arg0(args, name)
        k = getattr(other, "const", None)
        if name in ("intersect", "exclude") and k and all(type(y) is str and not looks_temporal(y) for y in k):
            # ``code.intersect('draft' | 'requested' | ...)``: against strings that are no dates,
            # FHIRPath equality is ``==`` for a string and false for anything else: a set lookup.
            literals = frozenset(k)
            if name == "intersect":
                return lambda c, env: unique([x for x in base(c, env) if type(x) is str and x in literals])
            return lambda c, env: [x for x in base(c, env) if not (type(x) is str and x in literals)]

        def sets(c: Collection, env: Env) -> Collection:
            a, b = base(c, env), other(c, env)
            if name == "union":
                return unique(a + b)
            if name == "combine":
                return a + b
            if name == "intersect":
                return unique([x for x in a if any(eq(x, y) for y in b)])
            if name == "exclude":
                return [x for x in a if not any(eq(x, y) for y in b)]
            if name == "subsetOf":
                return [all(any(eq(x, y) for y in b) for x in a)]
            return [all(any(eq(y, x) for x in a) for y in b)]
        return sets
    if name == "iif":
        if len(args) not in (2, 3):
            raise Unsupported("iif arity")

        condition = truth(args[0])

        def iif(c: Collection, env: Env) -> Collection:
            if condition(c, env):
                return args[1](c, env)
            return args[2](c, env) if len(args) == 3 else []
        return iif
    if name == "extension":
        url = _arg0(args, name)

        def ext(c: Collection, env: Env) -> Collection:
            u = url(c, env)
            out: Collection = []
            for x in base(c, env):
                for e in children(x, "extension"):
                    if type(e) is dict and u and e.get("url") == u[0]:
                        out.append(e)
            return out
        return ext
    if name in ("startsWith", "endsWith", "contains"):
        literal = getattr(args[0], "const", None) if len(args) == 1 else None
        if literal and type(literal[0]) is str:
            # A literal argument (``startsWith('#')``, ref-1 on every Reference): bound once.
            text: str = literal[0]
            if name == "startsWith":
                return _string_fn(base, args, lambda s, v: s.startswith(text), True)
            if name == "endsWith":
                return _string_fn(base, args, lambda s, v: s.endswith(text), True)
            return _string_fn(base, args, lambda s, v: text in s, True)
        if name == "startsWith":
            return _string_fn(base, args, lambda s, v: s.startswith(str(v[0])), True)
        if name == "endsWith":
            return _string_fn(base, args, lambda s, v: s.endswith(str(v[0])), True)
        return _string_fn(base, args, lambda s, v: str(v[0]) in s, True)
    if name == "matches":
        return _matches(base, args)
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
                return [] if not items else unsupported("toString of a complex value")
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
    if name == "hasExtension":
        extensions = function(base, "extension", args)
        return lambda c, env: [bool(extensions(c, env))]
    if name == "memberOf":
        return _member_of(base, _arg0(args, name))
    if name == "conformsTo":
        return _conforms_to(base, _arg0(args, name))
    if name == "htmlChecks":
        # Narrative XHTML rules are enforced natively by the xhtml module; this invariant defers to it.
        return lambda c, env: [True]
    raise Unsupported(f"function {name}()")
