"""Invariants (ElementDefinition.constraint): https://hl7.org/fhir/R4/conformance-rules.html#constraints.

Each constraint's FHIRPath ``expression`` is evaluated with the element as focus, ``%resource`` the
resource that holds it and ``%rootResource`` the outermost one; a result of ``false`` breaks it and
is reported with the constraint's severity (error or warning) and its key in the diagnostics.

Evaluation is layered for speed: the compiled subset of :mod:`fhirpath_fast` first; the project's
full engine (:mod:`fhir_exchange.fhir.fhirpath`, fhirpathpy plus the FHIR functions) for the rest. An
expression that neither can evaluate is reported once as information ("not evaluated"), never as a
failure of the resource.

An empty result counts as satisfied, as in fhirpathpy and the project's ``constraint_holds``:
invariants are written as implications, and an empty one has nothing to hold against.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from fhir_exchange.fhir import fhirpath
from fhir_exchange.validation.fhirpath_fast import Unsupported, compile_fast, touches
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.schema import Constraint

Evaluator = Callable[[Any, dict[str, Any]], list[Any]]


Resolve = Callable[[str], dict[str, Any] | None]


class FullEngine(Protocol):
    def evaluate(self, expression: str, node: Any, type_path: str, resource: Any, root: Any,
                 resolve: Resolve | None = None) -> list[Any]: ...

    def holds(self, result: list[Any]) -> bool: ...


class _ProjectEngine:
    """``fhir_exchange.fhir.fhirpath``: the project's engine (fhirpathpy plus the FHIR functions)."""

    def evaluate(self, expression: str, node: Any, type_path: str, resource: Any, root: Any,
                 resolve: Resolve | None = None) -> list[Any]:
        compiled = fhirpath.compile(expression)  # lru-cached by the module
        return list(compiled.evaluate(resource, node, root_resource=root, context_path=type_path,
                                      resolver=resolve))

    def holds(self, result: list[Any]) -> bool:
        return bool(fhirpath.constraint_holds(result))


# Errata of the R4 core definitions, corrected as the HL7 reference validator corrects them.
CORRECTIONS: dict[str, str] = {
    # "more than one enableWhen" written as count() > 2 in R4 (fixed in R4B/R5)
    "enableWhen.count() > 2 implies enableBehavior.exists()": "enableWhen.count() > 1 implies enableBehavior.exists()",
    # ref-1 forgot the reference "#" from a contained resource to its container (fixed in R5)
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id"
    ".trace('ids'))":
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id"
    ".trace('ids')) or (reference = '#' and %rootResource != %resource)",
}

_FAST_FAILED = object()


def _guard(fast: Any) -> frozenset[str] | None:
    """The names a constraint reads, when it holds on an element that has none of them.

    Such a constraint need not be evaluated on an element without those names: its result depends
    on them only, and is "holds" without them (e.g. ``dataAbsentReason.empty() or value.empty()``)."""
    names = getattr(fast, "focus_names", None)
    if fast is _FAST_FAILED or names is None:
        return None
    try:
        result = fast([{}], {"resource": [{}], "rootResource": [{}], "context": [{}]})
    except Exception:  # anything odd: no shortcut
        return None
    return names if not (len(result) == 1 and result[0] is False) else None


class InvariantChecker:
    """Evaluates constraints; compiled expressions are cached for the life of the checker."""

    def __init__(self, typed_descendants: Callable[[list[Any], str], list[Any]] | None = None) -> None:
        """``typed_descendants(items, type)`` answers ``descendants().ofType(type)`` from definitions."""
        self._typed_descendants = typed_descendants
        self._fast: dict[str, Any] = {}
        # id(constraints tuple) -> (the tuple, its compiled constraints); the tuple is kept so the id
        # cannot be reused by another object while the entry lives.
        self._by_tuple: dict[int, tuple[tuple[Constraint, ...], list[tuple[Constraint, str, Any, Any]]]] = {}
        self._engine: FullEngine | None = None
        self._lock = threading.Lock()

    def full_engine(self) -> FullEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = _ProjectEngine()
        return self._engine

    def _fast_fn(self, expression: str) -> Any:
        fast = self._fast.get(expression)
        if fast is None:
            try:
                fast = compile_fast(expression)
            except Exception:  # Unsupported, or a syntax the subset parser chokes on: the full engine decides
                fast = _FAST_FAILED
            self._fast[expression] = fast
        return fast

    def _full(self, expression: str, node: Any, type_path: str, resource: Any, root: Any,
              resolve: Resolve | None = None) -> bool | None:
        engine = self.full_engine()
        try:
            return engine.holds(engine.evaluate(expression, node, type_path, resource, root, resolve))
        except Exception:  # the engine's own failure is not the resource's
            return None

    def evaluate(self, expression: str, node: Any, type_path: str, resource: Any, root: Any) -> bool | None:
        """True/False for holds/broken; None when no engine could evaluate it."""
        expression = CORRECTIONS.get(expression, expression)
        fast = self._fast_fn(expression)
        if fast is not _FAST_FAILED:
            try:
                result = fast([node], {"resource": [resource], "rootResource": [root], "context": [node]})
                return not (len(result) == 1 and result[0] is False)
            except Unsupported:
                pass
        return self._full(expression, node, type_path, resource, root)

    def _typed_descendants_or_unsupported(self, items: list[Any], type_code: str) -> list[Any]:
        assert self._typed_descendants is not None
        try:
            return self._typed_descendants(items, type_code)
        except ValueError as e:
            raise Unsupported(str(e)) from e

    def _prepared(self, constraints: tuple[Constraint, ...]) -> list[tuple[Constraint, str, Any, Any]]:
        prepared = self._by_tuple.get(id(constraints))
        if prepared is None or prepared[0] is not constraints:
            if len(self._by_tuple) > 50_000:  # shapes rebuilt after many definition changes
                self._by_tuple.clear()
            items = []
            for c in constraints:
                if c.expression:
                    expr = CORRECTIONS.get(c.expression, c.expression)
                    fast = self._fast_fn(expr)
                    items.append((c, expr, fast, _guard(fast)))
            prepared = (constraints, items)
            self._by_tuple[id(constraints)] = prepared
        return prepared[1]

    def check(self, constraints: tuple[Constraint, ...], node: Any, path: str, type_path: str,
              resource: dict[str, Any], root: dict[str, Any], sink: IssueSink,
              resolve: Resolve | None = None) -> None:
        """Evaluate ``constraints`` on ``node``; ``resolve`` backs ``resolve()`` (contained, Bundle)."""
        env: dict[str, Any] | None = None
        focus = [node]
        for c, expr, fast, guard in self._prepared(constraints):
            if guard is not None and not touches(node, guard):
                continue  # none of what it reads is there, and on nothing it holds
            if env is None:
                # Built on first need: on many nodes every constraint is skipped by its guard.
                env = {"resource": [resource], "rootResource": [root], "context": [node]}
                if resolve is not None:
                    env["%resolve"] = resolve
                if self._typed_descendants is not None:
                    env["%typed_descendants"] = self._typed_descendants_or_unsupported
            verdict: bool | None
            if fast is not _FAST_FAILED:
                try:
                    result = fast(focus, env)
                    verdict = not (len(result) == 1 and result[0] is False)
                except Unsupported:
                    verdict = self._full(expr, node, type_path, resource, root, resolve)
            else:
                verdict = self._full(expr, node, type_path, resource, root, resolve)
            if verdict is None:
                sink.info("informational", MsgId.INVARIANT_UNEVALUATED,
                          f"Constraint {c.key} could not be evaluated: {c.expression}", path)
            elif not verdict:
                severity = "error" if c.severity == "error" else "warning"
                sink.add(severity, "invariant", MsgId.INVARIANT, f"Constraint failed: {c.key}: {c.human}", path)
