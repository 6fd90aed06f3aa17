"""FHIRPath http://hl7.org/fhirpath/N1/ as profiled by FHIR R4 https://hl7.org/fhir/R4/fhirpath.html.

The evaluator: :class:`CompiledPath` and the fhirpathpy glue. The one FHIRPath entry point of
the server (invariants, search parameter extraction, ``_filter``-style queries). N1 is the
normative release R4 uses; the FHIRPath 2.0 additions the official test suite exercises are
supported too. The FHIR page adds the model, the environment variables and the FHIR-specific
functions.

Engine: fhirpathpy. We use its ANTLR parser, its R4 type model and its tree-walking evaluator
(``fhirpathpy.engine.do_eval``) unchanged, and plug in through the two inputs that evaluator
takes: ``userInvocationTable`` (our function/operator table, :mod:`table`, one module per spec section, which
replaces fhirpathpy's functions of the same name) and the model dict (fhirpathpy's R4 model with
a choice-type lookup that also works below an untyped context). Nothing in fhirpathpy is
patched. What those cannot reach is done by :mod:`parser`, on the parsed AST (a plain dict tree), once per
expression:

* parse strictly: fhirpathpy's own ``parse()`` silently ignores syntax errors and trailing text;
* fold literals into per-expression constants read through ``%`` variables, because fhirpathpy
  reads ``1.0`` as the integer 1, has no partial DateTime (``@2015T``), mis-unescapes strings and
  cannot negate a quantity;
* restore FHIRPath 2.0 precedence of ``is``/``as`` over ``|`` and comparisons (fhirpathpy's
  grammar is older), as the official tests and HAPI do;
* merge a primitive's value and its ``_name`` extension object, which fhirpathpy navigates as two
  nodes: every function and operator of our table does it on its input, and an internal
  ``__collapse()`` step goes before the two consumers that are fhirpathpy's (``[n]``, unary minus);
* drop pass-through nodes and flatten invocation chains (fhirpathpy pays per node);
* reject unknown functions, wrong argument counts and unknown type names at compile time.

``CompiledPath.check(base_type)`` adds the spec's strict mode as a separate static pass
(:mod:`check`): misspelt elements, ``valueQuantity`` for ``value``, wrong root type.

Conformance: the official R4 suite passes 934 of 935 cases
(``tests/conformance/test_fhirpath_suite.py``; the exception is listed with its reason in
``tests/conformance/fhirpath_known_failures.txt``). Speed: compiling is cached; evaluating a
typical invariant or search expression on a small resource takes 10-80 µs, about what
fhirpathpy alone takes.

Where the spec leaves a choice we follow HAPI: ``resolve()`` of an unresolvable
``Patient/123`` yields a stub ``{"resourceType": "Patient", "id": "123"}`` so that search
parameters like ``subject.where(resolve() is Patient)`` index without fetching; the ``as()``
function filters a collection (R4 invariant dom-3 depends on it); ``memberOf()`` without a
terminology hook is empty (unknown). Without ``context_path`` an element context has no FHIR
type: navigation and ``value[x]`` still work, ``is``/``as`` on it do not.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from fhirpathpy.engine import do_eval
from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.fhir.fhirpath.check import Checker
from fhir_exchange.fhir.fhirpath.environment import ConformsTo, Environment, HookError, MemberOf, Resolver, Tracer
from fhir_exchange.fhir.fhirpath.errors import (
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSemanticError,
    FhirPathSyntaxError,
)
from fhir_exchange.fhir.fhirpath.items import boolean_of, collapse, is_output_item, output_value
from fhir_exchange.fhir.fhirpath.parser import prepare
from fhir_exchange.fhir.fhirpath.quantity import UCUM
from fhir_exchange.fhir.fhirpath.table import TABLE
from fhir_exchange.fhir.fhirpath.values import EVAL_MODEL, R4_MODEL, fhir_type_name

__all__ = [
    "CompiledPath",
    "ConformsTo",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirPathSemanticError",
    "FhirPathSyntaxError",
    "MemberOf",
    "Resolver",
    "Tracer",
    "TypedValue",
    "compile",
    "constraint_holds",
    "evaluate",
    "is_true",
]

# %-variables every FHIR expression may use (R4 fhirpath.html#variables); %resource,
# %rootResource and %context are set per evaluation.
ENVIRONMENT: dict[str, str] = {
    "ucum": UCUM,
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


class TypedValue(NamedTuple):
    """One result item with its FHIRPath type, e.g. ``("1974-12-25", "FHIR.date")``."""

    value: Any
    type: str | None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class CompiledPath:
    """A parsed and prepared expression; immutable and safe to share between threads."""

    __slots__ = ("_constants", "_root", "expression")

    def __init__(self, expression: str, root: dict[str, Any], constants: dict[str, Any]) -> None:
        self.expression = expression
        self._root = root
        self._constants = constants

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"

    @property
    def ast(self) -> dict[str, Any]:
        """The prepared AST (fhirpathpy's dict tree after preparation): the input of the compiled back-end."""
        return self._root

    @property
    def constants(self) -> dict[str, Any]:
        """The literals folded out of the AST, read through ``%`` variables of these names."""
        return self._constants

    def evaluate(
        self,
        resource: Any,
        context: Any | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        root_resource: Any | None = None,
        context_path: str | None = None,
        conforms_to: ConformsTo | None = None,
        member_of: MemberOf | None = None,
        trace: Tracer | None = None,
        now: datetime | None = None,
    ) -> list[Any]:
        """Evaluate against ``resource`` (FHIR JSON) with ``context`` as the focus.

        The result is plain Python: FHIR elements as the JSON found in the resource (dicts,
        str, bool, int/float), computed values as ``bool``/``int``/``Decimal``/``str``,
        dates and times as FHIR-format strings, quantities as FHIR Quantity dicts.

        ``context`` defaults to ``resource`` (``%resource``); ``root_resource`` is
        ``%rootResource`` (the container of a contained resource, or the Bundle an entry sits
        in: ``resolve()`` searches it). ``context_path`` names the FHIR type or element path of a
        non-resource ``context`` (``"Extension"``, ``"Observation.component"``,
        ``"Observation.effectiveDateTime"``) so ``is``/``as`` and choice elements work on and
        below it; without it the focus is untyped (navigation still works). ``resolver`` fetches references that are
        neither contained nor in the Bundle; ``conforms_to(resource, url)`` and
        ``member_of(code_or_coding, valueset_url)`` back ``conformsTo()`` and ``memberOf()``;
        ``trace(name, values)`` receives ``trace()`` output; ``now`` fixes ``now()``/``today()``.
        """
        items = self._run(
            resource, context, variables, resolver, root_resource, context_path,
            conforms_to, member_of, trace, now,
        )  # fmt: skip
        return [output_value(x) for x in items if is_output_item(x)]

    def check(self, base_type: str, *, foreign_roots: bool = False) -> None:
        """Check element names against the R4 model for a context of type ``base_type``.

        Raises :class:`FhirPathSemanticError` for a misspelt element, a concrete choice name
        (``valueQuantity``), a leading type name other than ``base_type`` (unless
        ``foreign_roots``, for multi-resource search expressions like ``A.x | B.y``) or
        ``first()``/``skip()``/``[n]`` on ``children()``/``descendants()``. Parts whose type
        cannot be known statically are not checked. See :mod:`check`.
        """
        Checker(self.expression, base_type, foreign_roots).run(self._root)

    def evaluate_typed(
        self,
        resource: Any,
        context: Any | None = None,
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        root_resource: Any | None = None,
        context_path: str | None = None,
        conforms_to: ConformsTo | None = None,
        member_of: MemberOf | None = None,
        trace: Tracer | None = None,
        now: datetime | None = None,
    ) -> list[TypedValue]:
        """Like :meth:`evaluate`, each value paired with its type (``"FHIR.HumanName"``)."""
        items = self._run(
            resource, context, variables, resolver, root_resource, context_path,
            conforms_to, member_of, trace, now,
        )  # fmt: skip
        out = []
        for x in items:
            if is_output_item(x):
                t = fhir_type_name(x)
                out.append(TypedValue(output_value(x), None if t is None else f"{t[0]}.{t[1]}"))
        return out

    def _run(
        self,
        resource: Any,
        context: Any,
        variables: Mapping[str, Any] | None,
        resolver: Resolver | None,
        root_resource: Any,
        context_path: str | None,
        conforms_to: ConformsTo | None,
        member_of: MemberOf | None,
        tracer: Tracer | None,
        now: datetime | None,
    ) -> list[Any]:
        focus = resource if context is None else context
        if context_path is not None and focus is not None:
            focus = ResourceNode.create_node(focus, _focus_path(context_path))
        data_root = [] if focus is None else list(focus) if isinstance(focus, list) else [focus]
        vars_: dict[str, Any] = {
            **ENVIRONMENT,
            "resource": resource,
            "rootResource": resource if root_resource is None else root_resource,
            "context": focus,
        }
        if variables:
            for name, value in variables.items():
                # fhirpathpy hands list variables to expressions as-is; copy so nothing
                # downstream (unary minus mutates its operand list) can touch the caller's list.
                vars_[name] = list(value) if isinstance(value, list) else value
        vars_.update(self._constants)
        env = Environment(
            resource=resource,
            root_resource=resource if root_resource is None else root_resource,
            now=now,
            resolver=resolver,
            conforms_to=conforms_to,
            member_of=member_of,
            tracer=tracer,
        )
        ctx = {
            "$this": data_root,  # fhirpathpy leaves it unset outside where()/select(): KeyError
            "dataRoot": data_root,
            "vars": vars_,
            "model": EVAL_MODEL,
            "userInvocationTable": TABLE,
            "fx": env,
        }
        try:
            result = do_eval(ctx, data_root, self._root)
        except HookError as exc:
            raise exc.original from None
        except FhirPathError as exc:
            raise FhirPathEvaluationError(exc.message, self.expression) from exc
        except RecursionError as exc:
            raise FhirPathEvaluationError("expression nests too deeply", self.expression) from exc
        except Exception as exc:
            # fhirpathpy's own functions signal type errors with plain exceptions.
            raise FhirPathEvaluationError(f"{type(exc).__name__}: {exc}", self.expression) from exc
        return collapse(result if isinstance(result, list) else [result])


def _focus_path(context_path: str) -> str | None:
    """The fhirpathpy node path for a context: its FHIR type, or the path of a backbone element.

    ``Observation.effective[x]`` names no single type, so such a focus stays untyped; pass the
    concrete element (``Observation.effectiveDateTime``) or type (``dateTime``) instead.
    """
    path = context_path.replace("[x]", "")
    if path in R4_MODEL["path2Type"]:
        return R4_MODEL["path2Type"][path] or path
    if path in R4_MODEL["choiceTypePaths"]:
        return None
    return path


@functools.lru_cache(maxsize=4096)
def compile(expression: str) -> CompiledPath:
    """Parse and prepare ``expression`` once; raises :class:`FhirPathSyntaxError`."""
    try:
        root, constants = prepare(expression)
    except FhirPathError:
        raise
    except RecursionError:
        raise FhirPathSyntaxError("expression nests too deeply", expression) from None
    except Exception as exc:  # an AST shape we did not foresee: still the caller's bad input
        raise FhirPathSyntaxError(f"cannot compile: {type(exc).__name__}: {exc}", expression) from exc
    return CompiledPath(expression, root, constants)


def evaluate(resource: Any, expression: str, context: Any | None = None, **kw: Any) -> list[Any]:
    """``compile(expression).evaluate(resource, context, **kw)``."""
    return compile(expression).evaluate(resource, context, **kw)


def is_true(result: list[Any]) -> bool:
    """FHIRPath boolean evaluation of a result: empty is false, one non-boolean item is true.

    Raises :class:`FhirPathEvaluationError` for more than one item (spec: Singleton Evaluation of Collections).
    """
    return boolean_of(list(result)) is True


def constraint_holds(result: list[Any]) -> bool:
    """FHIR invariant semantics: an empty result or a single true means the constraint holds.

    A single ``false`` fails; one non-boolean item counts as true (singleton evaluation).
    More than one item is an error in the constraint itself and raises.
    """
    return boolean_of(list(result)) is not False
