"""Value semantics of the compiled back-end (:mod:`compiled`) over raw FHIR JSON.

The compiled back-end reads the resource as parsed JSON (dicts, lists, str, bool, int, float), not
as the full evaluator's typed nodes, so equality and ordering are decided here, from the JSON
shapes: strings that look like dates compare as :class:`Temporal` values of the package (same
precision only), Quantities through :mod:`ucum`. Whatever the JSON cannot settle raises
:class:`Unsupported`; the caller then asks the full evaluator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from fhir_exchange.fhir.fhirpath.errors import FhirPathError
from fhir_exchange.fhir.fhirpath.quantity import UCUM
from fhir_exchange.fhir.fhirpath.temporal import Temporal, compare_temporal
from fhir_exchange.fhir.fhirpath.ucum import compare_quantities

Collection = list[Any]
Env = dict[str, Any]
Fn = Callable[[Collection, Env], Collection]
# The boolean of a closure's result (fhirpath.html#singleton): True/False, None for empty.
Truth = Callable[[Collection, Env], bool | None]
_UNSEEN: Final[Any] = object()


class Unsupported(Exception):
    """The expression (or this evaluation of it) needs the full FHIRPath evaluator."""


def _choice_names() -> frozenset[str]:
    """Names of the R4 choice elements (value, onset, deceased...), from fhirpathpy's R4 model."""
    from fhirpathpy.models import models

    return frozenset(k.rsplit(".", 1)[-1] for k in models["r4"]["choiceTypePaths"])


def _resource_types() -> frozenset[str]:
    from fhirpathpy.models import models

    parents = models["r4"]["type2Parent"]
    return frozenset({t for t, p in parents.items() if p in ("DomainResource", "Resource")}
                     | {"Resource", "DomainResource"})


def _choice_keys() -> dict[str, frozenset[str]]:
    """Per choice name, every key it can have in JSON (``value`` → ``valueQuantity``, ...)."""
    from fhirpathpy.models import models

    keys: dict[str, set[str]] = {}
    for path, types in models["r4"]["choiceTypePaths"].items():
        name = path.rsplit(".", 1)[-1]
        keys.setdefault(name, set()).update(name + t[:1].upper() + t[1:] for t in types)
    return {n: frozenset(k) for n, k in keys.items()}


# Only these need the search for ``name`` + Type among an object's keys.
CHOICE_NAMES: Final = _choice_names()
_CHOICE_KEYS: Final = _choice_keys()
RESOURCE_TYPES: Final = _resource_types()


def _extension_only(comp: Any) -> Collection:
    # A primitive with only extensions exists, though it has no value (json.html#primitive).
    return [c for c in comp if c is not None] if type(comp) is list else [comp]


def children(item: Any, name: str) -> Collection:
    """``item.name`` over JSON: a choice element by its plain name, a primitive's ``_name``."""
    if type(item) is not dict:
        return []
    v = item.get(name)
    if v is None:
        if name not in CHOICE_NAMES:
            comp = item.get("_" + name)
            return [] if comp is None else _extension_only(comp)
        # A choice element is navigated by its plain name: value → valueQuantity.
        n = len(name)
        for k, val in item.items():
            if len(k) > n and k.startswith(name) and k[n].isupper():
                v = val
                break
        else:
            comp = item.get("_" + name)
            return [] if comp is None else _extension_only(comp)
    if type(v) is list:
        return v[:] if None not in v else [x for x in v if x is not None]
    return [v]


def choice_key(item: Any, name: str) -> str | None:
    """The key a choice element ``name`` has in ``item`` (``valueQuantity``), if any."""
    if type(item) is not dict:
        return None
    n = len(name)
    for k in item:
        if len(k) > n and k.startswith(name) and k[n].isupper():
            return k
    return None


def singleton_bool(c: Collection) -> bool | None:
    if not c:
        return None
    if len(c) > 1:
        raise Unsupported("boolean of a collection of more than one")
    v = c[0]
    if type(v) is bool:
        return v
    return True  # a single non-boolean item counts as true (fhirpath.html#singleton)


def eq(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is str and type(b) is str:
        if looks_temporal(a) and looks_temporal(b) and len(a) != len(b):
            raise Unsupported("date equality across precisions")
        return a == b
    return bool(a == b)


def equiv(a: Any, b: Any) -> bool:
    if type(a) is str and type(b) is str:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return eq(a, b)


_TEMPORAL: Final = re.compile(r"\d{4}(-\d\d(-\d\d(T[\d:.]+(Z|[+-]\d\d:\d\d)?)?)?)?$")


def looks_temporal(s: str) -> bool:
    return len(s) >= 4 and s[:4].isdigit() and _TEMPORAL.match(s) is not None


def _temporal(s: str) -> Temporal | None:
    if "T" in s:
        return Temporal.parse_datetime(s)
    if ":" in s:
        return Temporal.parse_time(s)
    return Temporal.parse_date(s)


# The common shapes of dates in resources: a full date, an instant-like dateTime (seconds, an
# offset). Two values of one of these shapes compare without the precision rules of
# :func:`compare_temporal` (same precision, offsets known), so Python's own parsers answer.
_FULL_DATE: Final = re.compile(r"\d{4}-\d\d-\d\d$")
_FULL_DATETIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$")


def _full_precision(s: str) -> tuple[int, Any] | None:
    """(0, the text) for a valid full date, (1, the aware datetime) for a valid full dateTime with
    an offset, None for anything else (other precisions, invalid values)."""
    try:
        if len(s) == 10:
            if _FULL_DATE.match(s):
                date.fromisoformat(s)  # validity only: Feb 30 is no date
                return (0, s)  # the text orders as the dates do
        elif len(s) >= 20 and _FULL_DATETIME.match(s) and "0001" < s[:4] < "9999":  # no offset past the calendar's ends
            # Aware datetimes: offsets are applied, fractions beyond microseconds cut as Temporal does.
            return (1, datetime.fromisoformat(s))
    except ValueError:
        return None
    return None


# Values seen, with what :func:`_full_precision` made of them: the same few dates recur in every
# resource (authoredOn, period.start...). Bounded: emptied when full.
_FULL_PRECISION: Final[dict[str, tuple[int, Any] | None]] = {}
_FULL_PRECISION_MAX: Final = 4096


def _compare_full_precision(a: str, b: str) -> int | None:
    """-1/0/1 for two full dates or two full dateTimes with offsets; None for anything else
    (other precisions, invalid values: :func:`compare_temporal` decides, as before)."""
    cache = _FULL_PRECISION
    x = cache.get(a, _UNSEEN)
    if x is _UNSEEN:
        if len(cache) >= _FULL_PRECISION_MAX:
            cache.clear()
        x = cache[a] = _full_precision(a)
    if x is None:
        return None
    y = cache.get(b, _UNSEEN)
    if y is _UNSEEN:
        if len(cache) >= _FULL_PRECISION_MAX:
            cache.clear()
        y = cache[b] = _full_precision(b)
    if y is None or x[0] != y[0]:
        return None
    u, v = x[1], y[1]
    return (u > v) - (u < v)


def compare(a: Any, b: Any) -> int | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and type(a) is not bool and type(b) is not bool:
        return (a > b) - (a < b)
    if type(a) is str and type(b) is str:
        fast = _compare_full_precision(a, b)
        if fast is not None:
            return fast
        if looks_temporal(a) or looks_temporal(b):
            ta, tb = _temporal(a), _temporal(b)
            # Different precisions may be incomparable (empty) in FHIRPath: the full evaluator decides.
            if ta is None or tb is None or ta.kind != tb.kind or len(ta.fields) != len(tb.fields):
                raise Unsupported("date comparison across precisions")
            try:
                r = compare_temporal(ta, tb)
            except FhirPathError as e:
                raise Unsupported(str(e)) from e
            if r is None:
                raise Unsupported("date comparison the precision leaves open")
            return r
        return (a > b) - (a < b)
    if type(a) is dict and type(b) is dict:
        if "value" not in a or "value" not in b:
            return None  # a Quantity without a value has nothing to order by: empty
        return _compare_quantities(a, b)
    raise Unsupported("comparison of non-primitive values")


def _compare_quantities(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """Quantities (fhirpath.html#comparison): same unit, or UCUM units :mod:`ucum` can convert;
    units that cannot be converted make the comparison empty (None)."""
    ua = (a.get("system"), a.get("code") or a.get("unit"))
    ub = (b.get("system"), b.get("code") or b.get("unit"))
    if ua == ub:
        return compare(a["value"], b["value"])
    if ua[0] != UCUM or ub[0] != UCUM:
        return None  # a non-UCUM unit is comparable only with itself
    try:
        r = compare_quantities(Decimal(str(a["value"])), str(ua[1]), Decimal(str(b["value"])), str(ub[1]))
    except InvalidOperation:
        return None
    if r is None:
        raise Unsupported("UCUM units beyond the local subset")
    return r


def hash_key(x: Any) -> tuple[str, Any] | None:
    """A hashable stand-in for FHIRPath equality of primitives (None for complex values)."""
    t = type(x)
    if t is bool:
        return ("b", x)
    if t is int or t is float:
        return ("n", x)  # 1 and 1.0 hash and compare equal, as FHIRPath wants
    if t is str:
        return ("s", x)
    return None


def unique(c: Collection) -> Collection:
    if len(c) < 2:
        return list(c)
    for x in c:
        if type(x) is not str:
            break
    else:
        # Strings only (fullUrls, codes): their keys are the strings themselves.
        return list(dict.fromkeys(c))
    keys = [hash_key(x) for x in c]
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
        if not any(eq(x, y) for y in out):
            out.append(x)
    return out


def touches(node: Any, names: frozenset[str]) -> bool:
    """Does ``node`` carry any of ``names`` (a choice name by any of its types, a primitive by ``_name``)?"""
    if type(node) is not dict:
        return True
    for n in names:
        if n in node or ("_" + n) in node:
            return True
        if n in CHOICE_NAMES:
            size = len(n)
            for k in node:
                if len(k) > size and k.startswith(n) and k[size].isupper():
                    return True
    return False


def guard_keys(names: frozenset[str]) -> frozenset[str]:
    """The JSON keys that carry any of ``names``: ``not guard_keys(names).isdisjoint(node)`` is
    :func:`touches` for a dict ``node``, in one call."""
    keys: set[str] = set()
    for n in names:
        for k in (n, *_CHOICE_KEYS.get(n, ())):
            keys.update((k, "_" + k))
    return frozenset(keys)


# -- closures and what later compilation steps read back from them -----------------------------

def identity(c: Collection, env: Env) -> Collection:
    return c


def tag(fn: Fn, **attrs: Any) -> Fn:
    """Attach what later compilation steps read back with ``getattr`` (``const``, ``focus_free``,
    ``trivial``, ``step_of``, ``descendants_of``, ``string_literal``, ``focus_names``, ``item_type``,
    ``chain_of``, ``nonempty``, ``presence_of``, ``negated``, ``chain_terms``, ``key_literal``):
    attributes of the closure itself, so that evaluating it costs no wrapper call."""
    for attr, value in attrs.items():
        setattr(fn, attr, value)
    return fn


def const(value: Collection) -> Fn:
    """A constant collection (literals, folded unions of literals)."""
    def constant(c: Collection, env: Env) -> Collection:
        return list(value)  # a copy: callers own the collections they are given
    return tag(constant, const=value, focus_free=True, trivial=True)


def truth(fn: Fn) -> Truth:
    """``singleton_bool(fn(c, env))`` as one call: the closure's own ``truth`` when it has one
    (operators and functions whose result is at most one boolean compute it without a list)."""
    native: Truth | None = getattr(fn, "truth", None)
    if native is not None:
        return native

    def of(c: Collection, env: Env) -> bool | None:
        r = fn(c, env)
        return r[0] if len(r) == 1 and type(r[0]) is bool else singleton_bool(r)
    return of


def boolean(value: Truth) -> Fn:
    """The closure of a result of at most one boolean, carrying ``value`` as its ``truth``: its
    callers in a boolean context (and/or/not, where/all criteria, the invariant verdict) call that,
    and no list is built."""
    def as_collection(c: Collection, env: Env) -> Collection:
        v = value(c, env)
        return [] if v is None else [v]
    return tag(as_collection, truth=value)


def free(fn: Fn) -> bool:
    """Does ``fn`` not read the focus (only literals and ``%resource``/``%rootResource``/``%context``)?"""
    return getattr(fn, "focus_free", False)


def free_if(fn: Fn, is_free: bool) -> Fn:
    if is_free and fn is not identity:
        tag(fn, focus_free=True)
    return fn


def shared(fn: Fn) -> Fn:
    """A focus-free part of a focus-dependent expression, evaluated once per environment.

    ``$this in %resource.entry.fullUrl`` inside an ``all()`` over every reference of a Bundle would
    otherwise walk the Bundle again for each one. The cache lives in the environment, which callers
    make afresh for each node (its %resource, %rootResource and %context are fixed)."""
    if not free(fn) or getattr(fn, "trivial", False):
        return fn
    token = object()

    def peek(c: Collection, env: Env) -> Collection:
        # Typed: dict reads, not method calls, in the compiled build.
        cache: dict[object, Collection] | None = env.get("%shared")
        if cache is None:
            cache = env["%shared"] = {}
        hit = cache.get(token)
        if hit is None:
            hit = cache[token] = fn(c, env)
        return hit

    def once(c: Collection, env: Env) -> Collection:
        return list(peek(c, env))  # a copy: callers own the collections they are given
    # Callers that only read the collection (``in``/``contains``) take it without the copy.
    once.read_only = peek  # type: ignore[attr-defined]
    if getattr(fn, "truth", None) is not None:
        # A result of at most one boolean (``%resource.type = 'batch' or ...``): its truth, read
        # from the one evaluation, without a copy.
        def once_truth(c: Collection, env: Env) -> bool | None:
            hit = peek(c, env)
            return hit[0] if hit else None
        once.truth = once_truth  # type: ignore[attr-defined]
    # What later compilation steps read from the wrapped function: ``value.ofType(Quantity)``
    # compiles from the step, ``descendants().ofType(T)`` from the descendants' base.
    for attr in ("step_of", "descendants_of", "string_literal"):
        if hasattr(fn, attr):
            setattr(once, attr, getattr(fn, attr))
    return tag(once, focus_free=True, trivial=True)


def common(fn: Fn, token: object) -> Fn:
    """A part that occurs more than once in one expression on its focus (``children().element.
    where(...)`` three times in sdf-9), evaluated once per environment and focus item.

    Callers use it only where the focus is the expression's own (outside per-item criteria); the
    entry keeps the focus item, so that another focus (a caller that reuses an environment)
    misses instead of reading a stale result."""
    def once(c: Collection, env: Env) -> Collection:
        if len(c) != 1:
            return fn(c, env)
        cache: dict[object, tuple[Any, Collection]] | None = env.get("%common")
        if cache is None:
            cache = env["%common"] = {}
        hit = cache.get(token)
        if hit is None or hit[0] is not c[0]:
            hit = cache[token] = (c[0], fn(c, env))
        return list(hit[1])  # a copy: callers own the collections they are given
    for attr in ("step_of", "descendants_of"):
        if hasattr(fn, attr):
            setattr(once, attr, getattr(fn, attr))
    return once


def unsupported(msg: str) -> Collection:
    raise Unsupported(msg)
