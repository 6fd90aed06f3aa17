"""Singleton evaluation of collections: http://hl7.org/fhirpath/N1/#singleton-evaluation-of-collections.

What every function of the table shares: logical items (fhirpathpy's separate value and
``_name`` nodes of a primitive merged into one, :func:`collapse`), singletons and typed
parameters, boolean evaluation, the shape of a table entry, and the output form of results.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, cast

from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.fhir.fhirpath.errors import FhirPathEvaluationError
from fhir_exchange.fhir.fhirpath.quantity import Quantity
from fhir_exchange.fhir.fhirpath.temporal import Temporal
from fhir_exchange.fhir.fhirpath.values import describe, is_extension_carrier, system_value

# fhirpathpy's registry: {name: {"fn": ..., "arity": ...}} (untyped upstream)
FHIRPATHPY_REGISTRY = cast(dict[str, dict[str, Any]], invocation_registry)

# --------------------------------------------------------------------------------------------
# Collections: logical items, singletons, boolean evaluation
# --------------------------------------------------------------------------------------------


def collapse(items: list[Any]) -> list[Any]:
    """Merge fhirpathpy's separate value and ``_name`` nodes of a primitive into one item.

    fhirpathpy yields ``"given": [null, "James"], "_given": [{...}]`` as three nodes (None,
    "James", the extension object); FHIRPath sees two primitives, the first with no value. Nodes
    of one parent come as all values then all ``_`` objects, each tagged with the same
    ``propName``, so a repeated ``propName`` among values marks the start of the next parent.
    """
    if not any(
        isinstance(it, ResourceNode)
        and (it.data is None or (isinstance(it.data, Mapping) and is_extension_carrier(it)))
        for it in items
    ):
        return items
    out: list[Any] = []
    seen: dict[str, int] = {}
    for it in items:
        if not isinstance(it, ResourceNode) or it.propName is None:
            out.append(it)
            continue
        key = it.propName
        if is_extension_carrier(it):
            at = seen.get(key)
            if at is not None and not is_extension_carrier(out[at]):
                value = out[at]
                if value.data is None:
                    out[at] = it
                else:
                    out[at] = ResourceNode(value.data, value.path, it.data, value.propName, value.index)
                continue
            out.append(it)
            continue
        if key in seen:
            seen.clear()
        seen[key] = len(out)
        out.append(it)
    return [it for it in out if not (isinstance(it, ResourceNode) and it.data is None)]


def single_item(coll: list[Any], what: str = "value") -> Any:
    coll = collapse(coll)  # results of parameter expressions arrive as fhirpathpy built them
    if len(coll) > 1:
        raise FhirPathEvaluationError(f"expected a single {what}, got {len(coll)} items")
    return coll[0] if coll else None


def single_value(coll: list[Any], what: str = "value") -> Any:
    """The System value of a singleton collection (None when empty)."""
    item = single_item(coll, what)
    return None if item is None else system_value(item)


def boolean_of(coll: list[Any], strict: bool = False) -> bool | None:
    """FHIRPath "Singleton Evaluation of Collections": one non-boolean item counts as true."""
    coll = collapse(coll)
    if not coll:
        return None
    if len(coll) > 1:
        raise FhirPathEvaluationError(f"expected a single boolean, got {len(coll)} items")
    value = system_value(coll[0])
    if isinstance(value, bool):
        return value
    if strict:
        raise FhirPathEvaluationError(f"expected a boolean, got {describe(value)}")
    return True


def single_string(coll: list[Any], what: str = "string") -> str | None:
    value = single_value(coll, what)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FhirPathEvaluationError(f"expected a {what}, got {describe(value)}")
    return value


def param_value(p: Any) -> Any:
    """A typed parameter as fhirpathpy passes it: the value, or [] when it evaluated to empty."""
    if isinstance(p, list):
        return single_value(p, "parameter")
    return system_value(p)


def int_param(p: Any) -> int | None:
    value = param_value(p)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or value != int(value):
        raise FhirPathEvaluationError(f"expected an integer parameter, got {describe(value)}")
    return int(value)


def str_param(p: Any) -> str | None:
    value = param_value(p)
    if value is not None and not isinstance(value, str):
        raise FhirPathEvaluationError(f"expected a string parameter, got {describe(value)}")
    return value


Expr = Callable[[Any], list[Any]]
_UNSET = object()


def scoped(fn: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """Restore ``$this``/``$index``/``$total`` after an iterating function.

    fhirpathpy's parameter closures overwrite them in the shared context and never put them
    back, so after ``a.where(...)`` a later ``$this`` would still name the last ``a``.
    """

    @functools.wraps(fn)
    def wrapper(ctx: dict[str, Any], data: list[Any], *params: Any) -> list[Any]:
        saved = {k: ctx.get(k, _UNSET) for k in ("$this", "$index", "$total")}
        try:
            return fn(ctx, data, *params)
        finally:
            for key, value in saved.items():
                if value is _UNSET:
                    ctx.pop(key, None)
                else:
                    ctx[key] = value

    return wrapper


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def output_value(item: Any) -> Any:
    """An evaluation result item as plain JSON-ish Python (see ``CompiledPath.evaluate``)."""
    if isinstance(item, ResourceNode):
        return item.data
    if isinstance(item, Temporal):
        return str(item)
    if isinstance(item, Quantity):
        return item.to_fhir()
    if isinstance(item, float):
        return item
    return item


def is_output_item(item: Any) -> bool:
    return not (isinstance(item, ResourceNode) and (item.data is None or is_extension_carrier(item)))


_ANY2 = {2: ["Any", "Any"]}


def operator_entry(fn: Callable[..., Any], nullable: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"fn": fn, "arity": _ANY2}
    if nullable:
        entry["nullable"] = True
    return entry
