"""Compiled SearchParameter expressions (https://hl7.org/fhir/R4/search.html#table and
https://hl7.org/fhir/R4/searchparameter.html): the values a parameter indexes.

Almost every core expression is a union of simple paths (``Observation.subject``), optionally with a
type filter (``(Observation.value as Quantity)``, ``.as(dateTime)``, ``.where(resolve() is Patient)``),
an element filter (``.where(system='email')``) or an extension (``.extension('url')``). Those are
compiled once into a list of steps walked directly over the parsed JSON: a FHIRPath engine costs
about 20 us per evaluation against ~1 us for a walk, and ingest must index ~40 parameters per
resource. Anything else falls back to a FHIRPath engine (the project's ``fhir.fhirpath`` when it is
present, fhirpathpy otherwise), also compiled once.

A walked value is a pair ``(value, type)``: ``type`` is the FHIR type name when known from a choice
suffix (``valueQuantity`` -> ``Quantity``) or an ``as``; None otherwise (the extractors then go by shape).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Item = tuple[Any, str | None]
Evaluator = Callable[[dict[str, Any]], list[Item]]

# Type suffixes of choice elements (value[x] -> valueQuantity): FHIR R4 data types.
_TYPE_NAMES = (
        "Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid "
        "PositiveInt String Time UnsignedInt Uri Url Uuid Address Age Annotation Attachment CodeableConcept "
        "Coding ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range Ratio "
        "Reference SampledData Signature Timing ContactDetail Contributor DataRequirement Expression "
        "ParameterDefinition RelatedArtifact TriggerDefinition UsageContext Dosage Meta"
    )
FHIR_TYPES = frozenset(_TYPE_NAMES.split())


def type_name(t: str) -> str:
    """``dateTime`` -> ``DateTime`` (the choice suffix spelling)."""
    return t[:1].upper() + t[1:]


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # name | is (type filter) | resolve (reference target type) | where (field = literal) | ext
    arg: str = ""
    arg2: str = ""


_STEP_RE = re.compile(
    r"""\.(?:
        where\(resolve\(\)\s+is\s+(?P<resolve>[A-Za-z]+)\)
      | where\((?P<wfield>[a-zA-Z]+)\s*=\s*'(?P<wvalue>[^']*)'\)
      | extension\('(?P<ext>[^']+)'\)
      | as\((?P<as>[A-Za-z]+)\)
      | (?P<name>[a-zA-Z][A-Za-z0-9]*)
    )""",
    re.VERBOSE,
)
_AS_RE = re.compile(r"^\((?P<inner>.+?)\s+as\s+(?P<type>[A-Za-z]+)\)(?P<rest>(\.[a-zA-Z]+)*)$")


def split_union(expr: str) -> list[str]:
    """Top-level ``|`` alternatives (not inside parentheses or quotes)."""
    parts: list[str] = []
    depth = 0
    quote = False
    cur: list[str] = []
    for ch in expr:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quote:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _steps(path: str) -> list[Step] | None:
    """Steps of ``.a.b.where(...)`` (path starting with a dot), or None when not a simple path."""
    out: list[Step] = []
    pos = 0
    while pos < len(path):
        m = _STEP_RE.match(path, pos)
        if m is None:
            return None
        if m.group("resolve"):
            out.append(Step("resolve", m.group("resolve")))
        elif m.group("wfield"):
            out.append(Step("where", m.group("wfield"), m.group("wvalue")))
        elif m.group("ext"):
            out.append(Step("ext", m.group("ext")))
        elif m.group("as"):
            out.append(Step("is", type_name(m.group("as"))))
        else:
            out.append(Step("name", m.group("name")))
        pos = m.end()
    return out


def parse_simple(part: str, root_types: frozenset[str] | None) -> tuple[str | None, list[Step]] | None:
    """``Type.a.b`` -> (Type, steps); relative ``a.b`` (``root_types`` None) -> (None, steps).
    None when the part is not simple enough for the walker."""
    part = part.strip()
    m = _AS_RE.match(part)
    if m:
        inner = parse_simple(m.group("inner"), root_types)
        if inner is None:
            return None
        after = _steps(m.group("rest") or "")
        if after is None:
            return None
        return inner[0], [*inner[1], Step("is", type_name(m.group("type"))), *after]
    if part.startswith("(") and part.endswith(")") and part.count("(") == 1:
        part = part[1:-1]
    if root_types is None:
        steps = _steps("." + part)
        return None if steps is None else (None, steps)
    head, dot, rest = part.partition(".")
    if not head or not head[0].isupper() or not head.isalpha():
        return None
    steps = _steps(dot + rest) if dot else []
    return None if steps is None else (head, steps)


class _Choice:
    """A choice element of an expanded root, reachable under its base name (``value``)."""

    __slots__ = ("type", "value")

    def __init__(self, value: Any, type: str) -> None:
        self.value = value
        self.type = type


EXPANDED = "\x00expanded"  # marks a root whose choice elements are reachable by base name


def expand_root(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with each choice element also under its base name, so that the ~40 lookups
    of a type's parameters on the root are dictionary hits, not scans of the keys."""
    out = dict(resource)
    out[EXPANDED] = True
    for k, v in resource.items():
        for i in range(1, len(k)):
            if k[i].isupper() and k[i:] in FHIR_TYPES:
                out.setdefault(k[:i], _Choice(v, k[i:]))
                break
    return out


def strip_root(resource: dict[str, Any]) -> dict[str, Any]:
    if EXPANDED not in resource:
        return resource
    return {k: v for k, v in resource.items() if k != EXPANDED and not isinstance(v, _Choice)}


def _children(node: Any, name: str, out: list[Item]) -> None:
    if not isinstance(node, dict):
        return
    v = node.get(name)
    if v is not None:
        if isinstance(v, _Choice):
            if isinstance(v.value, list):
                out.extend((x, v.type) for x in v.value)
            else:
                out.append((v.value, v.type))
        elif isinstance(v, list):
            out.extend((x, None) for x in v if x is not None)
        else:
            out.append((v, None))
        return
    if EXPANDED in node:
        return
    # A choice element: name + type suffix (valueQuantity); at most one is present.
    n = len(name)
    for k, v in node.items():
        if len(k) > n and k.startswith(name) and k[n:] in FHIR_TYPES:
            if isinstance(v, list):
                out.extend((x, k[n:]) for x in v)
            else:
                out.append((v, k[n:]))
            return


def _ref_type(ref: Any) -> str | None:
    if not isinstance(ref, dict):
        return None
    if isinstance(ref.get("type"), str):
        return str(ref["type"])
    r = ref.get("reference")
    if not isinstance(r, str):
        return None
    parts = r.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-2] if len(parts) >= 2 else None


def walk(items: list[Item], steps: list[Step]) -> list[Item]:
    for step in steps:
        out: list[Item] = []
        if step.kind == "name":
            for node, _t in items:
                _children(node, step.arg, out)
        elif step.kind == "is":
            out = [(v, t or step.arg) for v, t in items if t is None or t == step.arg]
        elif step.kind == "resolve":
            out = [(v, t) for v, t in items if _ref_type(v) == step.arg]
        elif step.kind == "where":
            out = [(v, t) for v, t in items if isinstance(v, dict) and v.get(step.arg) == step.arg2]
        elif step.kind == "ext":
            for node, _t in items:
                if isinstance(node, dict):
                    for e in node.get("extension") or ():
                        if isinstance(e, dict) and e.get("url") == step.arg:
                            _children(e, "value", out)
        items = out
        if not items:
            break
    return items


def _fhirpath_engine(expr: str) -> Evaluator:
    """A compiled FHIRPath evaluator for expressions the walker does not handle."""
    try:  # the project's own FHIRPath (with resolve() and friends), once it exists
        from fhir_exchange.fhir import fhirpath as own

        compiled = own.compile(expr)

        def run_own(resource: dict[str, Any]) -> list[Item]:
            return [(v, None) for v in compiled.evaluate(strip_root(resource))]

        return run_own
    except Exception:
        pass
    import fhirpathpy
    from fhirpathpy.models import models

    fn = fhirpathpy.compile(expr, models["r4"])

    def run(resource: dict[str, Any]) -> list[Item]:
        try:
            return [(v, None) for v in fn(strip_root(resource), None) if v is not None]
        except Exception:
            return []

    return run


def compile_expression(expr: str, resource_type: str, base_types: frozenset[str]) -> Evaluator | None:
    """An evaluator of ``expr`` for resources of ``resource_type``; None if no alternative applies.

    ``base_types`` are names that stand for any resource (Resource, DomainResource)."""
    walkers: list[list[Step]] = []
    for part in split_union(expr):
        simple = parse_simple(part, frozenset())
        if simple is None:
            return _fhirpath_engine(expr)
        head, steps = simple
        if head == resource_type or head in base_types:
            walkers.append(steps)
    if not walkers:
        return None
    if len(walkers) == 1:
        only = walkers[0]
        return lambda resource: walk([(resource, None)], only)

    def run(resource: dict[str, Any]) -> list[Item]:
        out: list[Item] = []
        for steps in walkers:
            out.extend(walk([(resource, None)], steps))
        return out

    return run


def compile_relative(expr: str) -> Callable[[Item], list[Item]]:
    """A composite component's expression, relative to the composite's element.
    ``%resource`` paths are not supported relative to the element: they yield nothing."""
    walkers: list[list[Step]] = []
    for part in split_union(expr):
        simple = parse_simple(part, None)
        if simple is not None:
            walkers.append(simple[1])

    def run(item: Item) -> list[Item]:
        out: list[Item] = []
        for steps in walkers:
            out.extend(walk([item], steps))
        return out

    return run
