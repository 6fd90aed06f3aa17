"""The FHIRPath function and operator table handed to fhirpathpy's evaluator:
http://hl7.org/fhirpath/N1/#functions, http://hl7.org/fhirpath/N1/#operations and
https://hl7.org/fhir/R4/fhirpath.html#functions.

fhirpathpy merges ``ctx["userInvocationTable"]`` over its own registry on every call, so an entry
here *replaces* fhirpathpy's function or operator of the same name (operators are registered
under their symbol, ``isOp``/``asOp``/``inOp``/``containsOp`` for the keyword forms). Each entry
is ``{"fn": f, "arity": {n: [param kinds]}}`` as fhirpathpy expects; ``f(ctx, input, *params)``
gets the raw evaluation context, so functions can reach the per-call
:class:`~fhir_exchange.fhir.fhirpath.environment.Environment`.

The entries come from one module per section of the spec (each module's ``ENTRIES``). We replace
what fhirpathpy gets wrong for R4 (equality with precision and timezones, Date versus DateTime,
decimals, UCUM quantities, singleton evaluation of collections, ``as``/``ofType`` typing) and add
what it lacks (``hasValue``, ``resolve``, ``conformsTo``, ``memberOf``, ``htmlChecks``,
boundaries, ``sort``, ...). Functions fhirpathpy implements correctly (``first``, ``count``...)
are left to it, wrapped only to see logical items.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fhir_exchange.fhir.fhirpath import (
    arithmetic,
    boundaries,
    collection_functions,
    conversions,
    fhir_functions,
    math_functions,
    operators,
    strings,
    type_functions,
    utility,
)
from fhir_exchange.fhir.fhirpath.items import FHIRPATHPY_REGISTRY, collapse

TABLE: dict[str, dict[str, Any]] = {
    **operators.ENTRIES,
    **arithmetic.ENTRIES,
    **collection_functions.ENTRIES,
    **type_functions.ENTRIES,
    **conversions.ENTRIES,
    **strings.ENTRIES,
    **math_functions.ENTRIES,
    **boundaries.ENTRIES,
    **utility.ENTRIES,
    **fhir_functions.ENTRIES,
}

# Functions fhirpathpy implements correctly: registered here only to see logical items.
FHIRPATHPY_KEPT = frozenset(
    {"empty", "count", "first", "last", "tail", "take", "skip", "allTrue", "anyTrue", "allFalse",
     "anyFalse"}
)  # fmt: skip


def _logical(fn: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """Collapse the input and the collection parameters before a function sees them.

    Every function and operator goes through this table, so together with the final result
    this is where fhirpathpy's separate value/``_name`` nodes become one item each; no extra
    step per navigation is needed (see :func:`collapse`).
    """

    @functools.wraps(fn)
    def wrapper(ctx: Any, data: list[Any], *params: Any) -> list[Any]:
        return fn(ctx, collapse(data), *[collapse(p) if isinstance(p, list) else p for p in params])

    return wrapper


TABLE.update({name: dict(FHIRPATHPY_REGISTRY[name]) for name in FHIRPATHPY_KEPT})
for _entry in TABLE.values():
    _entry["fn"] = _logical(_entry["fn"])
KNOWN_FUNCTIONS = frozenset(TABLE)
