"""The FHIRPath expressions of conformance resources written to the server, checked before they count.

https://hl7.org/fhir/R4/searchparameter.html (``SearchParameter.expression``) and
https://hl7.org/fhir/R4/elementdefinition.html#ElementDefinition.constraint (``constraint.expression``).

FHIRPath evaluation is lenient: a misspelt element yields nothing, so a SearchParameter naming
``Patient.nmae`` would index nothing and an invariant naming ``valu.exists()`` would never hold
(or never fail) — silently. A written SearchParameter or StructureDefinition whose expressions do
not parse, or name elements its base type does not have (the strict checker,
:meth:`CompiledPath.check`), is refused instead (a write rule, 422 with the expression's location).

Where the checker cannot type the context, only parsing is required: an Extension's constraints
(they name sub-extensions by their url as if they were elements — R4's own substanceExposureRisk
does), a logical model's, and any element path the R4 model does not know (a profile's
``valueQuantity`` type slice, a custom type). The checker itself leaves unknown parts unchecked.
A constraint a snapshot inherits (``source`` another definition) is only parsed too: it is judged
where it is defined, and R4 itself has a few the strict checker rightly reports (cid-0 names a
``name`` ChargeItemDefinition lacks), which must not make every profile of that type unwritable.
"""

from __future__ import annotations

from typing import Any

from fhir_exchange.errors import Issue
from fhir_exchange.fhir.fhirpath import FhirPathError, FhirPathSyntaxError, compile

# R4's own constraints the strict checker rightly reports (the element named does not exist): only
# parsed, so that a copy of the core definition, or a profile repeating it, stays writable.
_R4_DEFECTS = frozenset({("cid-0", "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')")})


def _issue(message: str, where: str) -> Issue:
    return Issue("error", "processing", message, (where,), message_id="fhirpath-expression")


def search_parameter_issues(sp: dict[str, Any]) -> list[Issue]:
    """Errors in ``SearchParameter.expression``: it must parse and name elements of every base type."""
    expression = sp.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        return []  # absent (special parameters) or malformed: the structural validation reports that
    where = "SearchParameter.expression"
    try:
        path = compile(expression)
    except FhirPathSyntaxError as exc:
        return [_issue(f"SearchParameter.expression does not parse as FHIRPath: {exc}", where)]
    bases = sp.get("base")
    for base in bases if isinstance(bases, list) else []:
        if not isinstance(base, str):
            continue
        try:
            # foreign_roots: one expression serves several bases ("Patient.name | Practitioner.name").
            path.check(base, foreign_roots=True)
        except FhirPathError as exc:
            return [_issue(f"SearchParameter.expression names what base {base} does not have: {exc}", where)]
    return []


def _semantic_context(sd: dict[str, Any]) -> bool:
    """Whether the element paths of ``sd`` are FHIR model paths the strict checker may judge."""
    return sd.get("kind") != "logical" and sd.get("type") != "Extension"


def structure_definition_issues(sd: dict[str, Any]) -> list[Issue]:
    """Errors in the ``constraint.expression`` of every element of the snapshot and differential."""
    issues: list[Issue] = []
    semantic = _semantic_context(sd)
    checked: set[tuple[str, str]] = set()  # a snapshot repeats ele-1 on every element: judge each pair once
    for part in ("snapshot", "differential"):
        holder = sd.get(part)
        elements = holder.get("element") if isinstance(holder, dict) else None
        for i, element in enumerate(elements if isinstance(elements, list) else []):
            if not isinstance(element, dict):
                continue
            context = element.get("path")
            constraints = element.get("constraint")
            for j, constraint in enumerate(constraints if isinstance(constraints, list) else []):
                expression = constraint.get("expression") if isinstance(constraint, dict) else None
                if not isinstance(expression, str) or not isinstance(context, str):
                    continue
                if (context, expression) in checked:
                    continue
                checked.add((context, expression))
                where = f"StructureDefinition.{part}.element[{i}].constraint[{j}].expression"
                key = constraint.get("key", "?")
                try:
                    path = compile(expression)
                except FhirPathSyntaxError as exc:
                    issues.append(_issue(f"Constraint {key} on {context} does not parse as FHIRPath: {exc}", where))
                    continue
                source = constraint.get("source")
                own = not isinstance(source, str) or source.split("|")[0] == sd.get("url")
                if not (semantic and own) or (key, expression) in _R4_DEFECTS:
                    continue
                try:
                    path.check(context)
                except FhirPathError as exc:
                    issues.append(_issue(f"Constraint {key} on {context} names what {context} does not have: {exc}",
                                         where))
    return issues


def expression_issues(resource: dict[str, Any]) -> list[Issue]:
    """The checks above for whichever of the two types ``resource`` is (none for other types)."""
    rt = resource.get("resourceType")
    if rt == "SearchParameter":
        return search_parameter_issues(resource)
    if rt == "StructureDefinition":
        return structure_definition_issues(resource)
    return []
