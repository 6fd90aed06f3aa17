"""Invariants (ElementDefinition.constraint): https://hl7.org/fhir/R4/conformance-rules.html#constraints.

Each constraint's FHIRPath ``expression`` is evaluated with the element as focus, ``%resource`` the
resource that holds it and ``%rootResource`` the outermost one; a result of ``false`` breaks it and
is reported with the constraint's severity (error or warning) and its key in the diagnostics.

Evaluation uses the two back-ends of the one FHIRPath engine: the compiled back-end
(:mod:`fhir_exchange.fhir.fhirpath.compiled`, closures over the raw JSON) first; the full evaluator
(:mod:`fhir_exchange.fhir.fhirpath`) where it cannot compile or evaluate. An expression that neither
can evaluate is reported as information ("not evaluated"), never as a failure of the resource.

``memberOf()`` asks the terminology (:func:`member_of_terminology`): a value set the server does not
know, or a code it cannot verify, makes the invariant "not evaluated" rather than silently holding.
``resolve()`` finds contained and Bundle resources (the caller's ``resolve``); ``conformsTo()``
asks the caller's ``conforms_to`` when given, else reads ``meta.profile`` and core types.

An empty result counts as satisfied, as in fhirpathpy and the project's ``constraint_holds``:
invariants are written as implications, and an empty one has nothing to hold against.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast, guard_keys
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.native_invariants import NATIVE_INVARIANTS, NativeInvariant
from fhir_exchange.validation.schema import Constraint
from fhir_exchange.validation.structure import Loc, render
from fhir_exchange.validation.terminology import Terminology

Evaluator = Callable[[Any, dict[str, Any]], list[Any]]


Resolve = Callable[[str], dict[str, Any] | None]
# ``descendants().ofType(type)`` of the items: (items, type) -> the descendants of that type.
TypedDescendants = Callable[[list[Any], str], list[Any]]


class NotEvaluable(Exception):
    """A hook cannot answer (unknown value set): the invariant is "not evaluated", not held."""


class FullEngine(Protocol):
    def evaluate(self, expression: str, node: Any, type_path: str, resource: Any, root: Any,
                 resolve: Resolve | None = None) -> list[Any]: ...

    def holds(self, result: list[Any]) -> bool: ...


def member_of_terminology(terminology: Terminology) -> fhirpath.MemberOf:
    """``memberOf(valueset)`` of a code, Coding or CodeableConcept, answered by ``terminology``.

    Raises :class:`NotEvaluable` when the value set is unknown or the code cannot be verified here
    (a system that is not available locally): FHIRPath would say "empty", which an invariant reads
    as "holds", and that would be a silent pass."""
    def member_of(value: Any, url: str) -> bool:
        codings: list[tuple[Any, Any]]
        if isinstance(value, str):
            codings = [(None, value)]
        elif isinstance(value, dict) and "coding" in value:
            codings = [(c.get("system"), c.get("code")) for c in value["coding"] if isinstance(c, dict)]
        elif isinstance(value, dict):
            codings = [(value.get("system"), value.get("code"))]
        else:
            raise NotEvaluable(f"memberOf() of {type(value).__name__}")
        unknown = None
        for system, code in codings:
            if not isinstance(code, str):
                continue
            check = terminology.validate_code(url, system if isinstance(system, str) else None, code)
            if check.valid:
                return True
            if check.valid is None:
                unknown = check.message
        if unknown is not None:
            raise NotEvaluable(unknown)
        return False
    return member_of


class _ProjectEngine:
    """``fhir_exchange.fhir.fhirpath``: the full evaluator (fhirpathpy plus the FHIR functions)."""

    def __init__(self, member_of: fhirpath.MemberOf | None = None,
                 conforms_to: fhirpath.ConformsTo | None = None) -> None:
        self.member_of = member_of
        self.conforms_to = conforms_to

    def evaluate(self, expression: str, node: Any, type_path: str, resource: Any, root: Any,
                 resolve: Resolve | None = None) -> list[Any]:
        compiled = fhirpath.compile(expression)  # lru-cached by the module
        return list(compiled.evaluate(resource, node, root_resource=root, context_path=type_path,
                                      resolver=resolve, member_of=self.member_of,
                                      conforms_to=self.conforms_to))

    def holds(self, result: list[Any]) -> bool:
        return bool(fhirpath.constraint_holds(result))


# Errata of the R4 core definitions, corrected as the HL7 reference validator corrects them.
CORRECTIONS: Final[dict[str, str]] = {
    # "more than one enableWhen" written as count() > 2 in R4 (fixed in R4B/R5)
    "enableWhen.count() > 2 implies enableBehavior.exists()": "enableWhen.count() > 1 implies enableBehavior.exists()",
    # ref-1 forgot the reference "#" from a contained resource to its container (fixed in R5)
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id"
    ".trace('ids'))":
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id"
    ".trace('ids')) or (reference = '#' and %rootResource != %resource)",
}

_FAST_FAILED: Final = object()
# A constraint ready to run: itself, its (corrected) expression, its compiled closure (or
# _FAST_FAILED), the JSON keys without which it holds (or None), the closure's ``truth`` (or None),
# what may be evaluated without the environment (or None) and whether that is the whole expression.
_Prepared = tuple[Constraint, str, Any, "frozenset[str] | None", Any, Any, bool]


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

    def __init__(self, typed_descendants: Callable[[list[Any], str], list[Any]] | None = None, *,
                 member_of: fhirpath.MemberOf | None = None,
                 conforms_to: fhirpath.ConformsTo | None = None) -> None:
        """``typed_descendants(items, type)`` answers ``descendants().ofType(type)`` from definitions;
        ``member_of`` backs ``memberOf()`` (:func:`member_of_terminology`), ``conforms_to(resource,
        url)`` backs ``conformsTo()``."""
        self._typed_descendants = typed_descendants
        self.member_of = member_of
        self.conforms_to = conforms_to
        self._fast: dict[str, Any] = {}
        # id(constraints tuple) -> (the tuple, its compiled constraints); the tuple is kept so the id
        # cannot be reused by another object while the entry lives.
        self._by_tuple: dict[int, tuple[tuple[Constraint, ...], list[_Prepared]]] = {}
        self._engine: FullEngine | None = None
        self._hook_cache: tuple[Any, Any, dict[str, Any]] = (object(), None, {})
        # (%resource, %rootResource, member_of, conforms_to, the environment without %context and
        # %resolve) of the last node checked: consecutive nodes are mostly of one resource.
        self._base_env: tuple[Any, Any, Any, Any, dict[str, Any]] = (object(), None, None, None, {})
        self._lock = threading.Lock()
        # Called with each check's arguments before it runs (a tracing hook: the differential test
        # of the consult constraints sees every real site through it). The compiled build's classes
        # cannot have their methods replaced, so tracing needs its own attribute.
        self.observer: Callable[[tuple[Constraint, ...], Any, str, str, dict[str, Any], dict[str, Any],
                                 Resolve | None], None] | None = None

    def full_engine(self) -> FullEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = _ProjectEngine(self.member_of, self.conforms_to)
        return self._engine

    def _fast_fn(self, expression: str) -> Any:
        fast = self._fast.get(expression)
        if fast is None:
            try:
                # The hot core rules written by hand (native_invariants), else the compiled back-end.
                fast = NATIVE_INVARIANTS.get(expression) or compile_fast(expression)
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
                env = {"resource": [resource], "rootResource": [root], "context": [node],
                       "%member_of": self.member_of, "%conforms_to": self.conforms_to}
                result = fast([node], env)
                return not (len(result) == 1 and result[0] is False)
            except Unsupported:
                pass
            except NotEvaluable:
                return None
        return self._full(expression, node, type_path, resource, root)

    def _hooks(self) -> dict[str, Any]:
        """The environment's hooks that are the same on every node (``member_of`` and
        ``conforms_to`` are public attributes: read each time, in case a caller sets them)."""
        cached = self._hook_cache
        if cached[0] is self.member_of and cached[1] is self.conforms_to:
            return cached[2]
        hooks: dict[str, Any] = {}
        if self._typed_descendants is not None:
            hooks["%typed_descendants"] = self.typed_descendants_or_unsupported
        if self.member_of is not None:
            hooks["%member_of"] = self.member_of
        if self.conforms_to is not None:
            hooks["%conforms_to"] = self.conforms_to
        self._hook_cache = (self.member_of, self.conforms_to, hooks)
        return hooks

    def typed_descendants_or_unsupported(self, items: list[Any], type_code: str) -> list[Any]:
        assert self._typed_descendants is not None
        try:
            return self._typed_descendants(items, type_code)
        except ValueError as e:
            raise Unsupported(str(e)) from e

    def _prepared(self, constraints: tuple[Constraint, ...]) -> list[_Prepared]:
        prepared = self._by_tuple.get(id(constraints))
        if prepared is None or prepared[0] is not constraints:
            if len(self._by_tuple) > 50_000:  # shapes rebuilt after many definition changes
                self._by_tuple.clear()
            items = []
            for c in constraints:
                if c.expression:
                    expr = CORRECTIONS.get(c.expression, c.expression)
                    fast = self._fast_fn(expr)
                    names = _guard(fast)
                    # The JSON keys that carry those names: one set operation per node and constraint.
                    # An expression whose result is at most one boolean is asked for that boolean
                    # (its ``truth``), which builds no lists on the way.
                    verdict = getattr(fast, "truth", None)
                    # Evaluated before the environment is built, with an empty one: the whole
                    # expression when it reads nothing from it, else the leading ``or`` terms that
                    # do not (ref-1's ``reference.startsWith('#').not()``).
                    whole = verdict is not None and getattr(fast, "env_free", False)
                    early = verdict if whole else getattr(fast, "head_truth", None)
                    items.append((c, expr, fast, None if names is None else guard_keys(names), verdict, early, whole))
            prepared = (constraints, items)
            self._by_tuple[id(constraints)] = prepared
        return prepared[1]

    def check(self, constraints: tuple[Constraint, ...], node: Any, path: Loc, type_path: str,
              resource: dict[str, Any], root: dict[str, Any], sink: IssueSink,
              resolve: Resolve | None = None, descendants: TypedDescendants | None = None) -> None:
        """Evaluate ``constraints`` on ``node``; ``resolve`` backs ``resolve()`` (contained, Bundle),
        ``descendants`` (when given) ``descendants().ofType(T)`` instead of the definitions' walk.

        ``path`` is the node's expression or its location in the structural walk, rendered only
        when an issue is reported (most sites report nothing)."""
        if self.observer is not None:
            self.observer(constraints, node, path, type_path, resource, root, resolve)
        env: dict[str, Any] | None = None
        bare: dict[str, Any] | None = None  # the empty environment of what is tried before ``env``
        focus: list[Any] = []
        prepared = self._by_tuple.get(id(constraints))
        items = prepared[1] if prepared is not None and prepared[0] is constraints else self._prepared(constraints)
        is_dict = type(node) is dict
        for c, expr, fast, guard, fast_truth, early, whole in items:
            if guard is not None and is_dict and guard.isdisjoint(node):
                continue  # none of what it reads is there, and on nothing it holds
            if early is not None:
                if bare is None:
                    # One per node, like ``env``: what closures cache in it is keyed by closure.
                    bare = {}
                    if env is None:
                        focus = [node]
                try:
                    answer = early(focus, bare)
                except Exception:  # undecided here: the evaluation below decides (and reports)
                    answer = False
                if answer is True or (whole and answer is None):
                    continue  # holds, without an environment
            if env is None:
                # Built on first need: on many nodes every constraint is skipped by its guard. What
                # is the same on every node of a resource is built once (the last resource's, kept);
                # each node gets its own copy, which its closures' caches (%shared...) then fill.
                base = self._base_env
                if (base[0] is not resource or base[1] is not root or base[2] is not self.member_of
                        or base[3] is not self.conforms_to):
                    fresh = {"resource": [resource], "rootResource": [root], **self._hooks()}
                    base = self._base_env = (resource, root, self.member_of, self.conforms_to, fresh)
                if bare is None:
                    focus = [node]
                env = base[4].copy()
                env["context"] = focus
                if resolve is not None:
                    env["%resolve"] = resolve  # per call: profiles pass a new one each time
                if descendants is not None:
                    env["%typed_descendants"] = descendants
            verdict: bool | None
            if fast_truth is not None:
                try:
                    if fast_truth(focus, env) is not False:
                        continue  # holds (or empty, which holds): nothing to report
                    verdict = False
                except Unsupported:
                    verdict = self._full(expr, node, type_path, resource, root, resolve)
                except NotEvaluable:
                    verdict = None
            elif fast is not _FAST_FAILED:
                try:
                    result = fast(focus, env)
                    verdict = not (len(result) == 1 and result[0] is False)
                except Unsupported:
                    verdict = self._full(expr, node, type_path, resource, root, resolve)
                except NotEvaluable:
                    verdict = None
            else:
                verdict = self._full(expr, node, type_path, resource, root, resolve)
            _report(c, verdict, path, sink)

    def check_native(self, natives: tuple[tuple[Constraint, NativeInvariant], ...], node: Any, path: Loc,
                     type_path: str, resource: dict[str, Any], root: dict[str, Any], sink: IssueSink,
                     resolver_for: Callable[[dict[str, Any]], Resolve]) -> None:
        """Constraints the walk left to :mod:`native_invariants` (``Shape.native``), reported as
        :meth:`check` reports them; one its function declines (``Unsupported``) the full engine decides,
        as in :meth:`check`, with ``resolver_for(resource)`` backing resolve()."""
        focus: list[Any] = []
        env: dict[str, Any] = {}
        for c, native in natives:
            if native.holds_at_once(node):
                continue  # most References: no environment to build
            if not focus:
                focus.append(node)
                env.update({"resource": [resource], "rootResource": [root], "context": focus})
            try:
                if native.truth(focus, env) is not False:
                    continue
                verdict: bool | None = False
            except Unsupported:  # the function and the compiled closure declined
                verdict = self._full(native.evaluated, node, type_path, resource, root, resolver_for(resource))
            _report(c, verdict, path, sink)


def _report(c: Constraint, verdict: bool | None, path: Loc, sink: IssueSink) -> None:
    """A constraint's verdict as an issue: none when it holds."""
    if verdict is None:
        sink.info("informational", MsgId.INVARIANT_UNEVALUATED,
                  f"Constraint {c.key} could not be evaluated: {c.expression}", render(path))
    elif not verdict:
        severity = "error" if c.severity == "error" else "warning"
        sink.add(severity, "invariant", MsgId.INVARIANT, f"Constraint failed: {c.key}: {c.human}", render(path))
