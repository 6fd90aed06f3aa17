"""StructureDefinition snapshot → element tree: https://hl7.org/fhir/R4/elementdefinition.html and https://hl7.org/fhir/R4/profiling.html.

A snapshot is a flat, ordered list of ElementDefinitions; validation needs a tree (children,
slices, the referenced element of a ``contentReference``) with the few properties it reads decoded
once: cardinality as ints, types with their profiles, the binding, fixed/pattern values, and
constraints. Element ids (``Observation.component:systolic.code``) place each element; when a
definition has no ids (older or hand-written ones), ids are derived from path and sliceName in
document order, exactly as the snapshot rules (elementdefinition.html#id) define them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

FHIR_TYPE_EXT: Final = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_TYPES: Final = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


@dataclass(frozen=True, slots=True)
class TypeRef:
    code: str  # FHIR type code, e.g. "string", "Quantity", "Resource"
    profiles: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Binding:
    strength: str  # required | extensible | preferred | example
    value_set: str | None


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str | None
    source: str | None


@dataclass(slots=True, eq=False)
class ElementDef:
    id: str
    path: str
    name: str  # last path segment without "[x]"
    min: int
    max: int  # -1 when unbounded
    is_array: bool  # JSON array or not: fixed by the base definition's max, never by a profile
    types: tuple[TypeRef, ...]
    choice: bool
    content_ref: str | None
    binding: Binding | None
    slice_name: str | None
    raw: dict[str, Any]
    constraints: tuple[Constraint, ...] = ()
    children: list[ElementDef] = field(default_factory=list)
    slices: list[ElementDef] = field(default_factory=list)
    slicing: dict[str, Any] | None = None
    fixed: tuple[str, Any] | None = None  # (suffix, value) of fixed[x]
    pattern: tuple[str, Any] | None = None  # (suffix, value) of pattern[x]
    min_value: tuple[str, Any] | None = None  # (suffix, value) of minValue[x]
    max_value: tuple[str, Any] | None = None
    max_length: int | None = None
    # False when neither this element nor anything below it differs from the base definition:
    # a profile walk can skip it (the pass over the base has checked it already).
    relevant: bool = True
    type_set: frozenset[str] = frozenset()
    has_type_profiles: bool = False
    # Filled by the profile walker: the constraints not already checked by the base pass, and the
    # coded values already found to meet this element's binding.
    own_constraints: tuple[Constraint, ...] | None = None
    good_codes: set[Any] = field(default_factory=set)
    # Filled by the profile walker: the element narrows only cardinality, so its values need
    # counting, not checking (None until computed).
    count_only: bool | None = None
    # Filled by the profile walker: per type, (code, profiles, target profiles) without the core
    # ones, and only the types that have any left.
    type_profiles: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] | None = None
    # Filled by the profile walker (profile_compile.py), once per schema: the steps over this
    # element's children, what is checked on each of its values, and the index of its slices.
    steps: tuple[Any, ...] | None = None
    value_plan: Any = None
    slice_index: Any = None
    choice_keys: dict[str, tuple[str, str] | None] | None = None

    @property
    def type_codes(self) -> tuple[str, ...]:
        return tuple(t.code for t in self.types)

    def child(self, name: str) -> ElementDef | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(slots=True, eq=False)
class StructureSchema:
    url: str
    version: str | None
    name: str
    type: str
    kind: str  # primitive-type | complex-type | resource | logical
    derivation: str | None
    abstract: bool
    base_definition: str | None
    root: ElementDef
    by_id: dict[str, ElementDef]
    sd: dict[str, Any]

    def element(self, id_or_path: str) -> ElementDef | None:
        return self.by_id.get(id_or_path)


def _max(v: Any) -> int:
    if v in (None, "*"):
        return -1
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


def type_code(t: dict[str, Any]) -> str:
    code = t.get("code", "")
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri") or SYSTEM_TYPES.get(code, "string")
        return SYSTEM_TYPES.get(code, "string")
    return code


def _typed_value(e: dict[str, Any], prefix: str) -> tuple[str, Any] | None:
    for k, v in e.items():
        if k.startswith(prefix) and len(k) > len(prefix) and k[len(prefix)].isupper():
            return (k[len(prefix):], v)
    return None


def compile_element(e: dict[str, Any], eid: str) -> ElementDef:
    path: str = e.get("path", eid)
    last = path.rsplit(".", 1)[-1]
    choice = last.endswith("[x]")
    types = tuple(
        TypeRef(type_code(t), tuple(t.get("profile", ())), tuple(t.get("targetProfile", ())))
        for t in e.get("type", ())
    )
    b = e.get("binding")
    binding = Binding(b.get("strength", "example"), b.get("valueSet") or b.get("valueSetReference", {}).get(
        "reference")) if b else None
    base = e.get("base") or {}
    max_ = _max(e.get("max"))
    base_max = _max(base.get("max", e.get("max")))
    cref = e.get("contentReference")
    constraints = tuple(
        Constraint(c.get("key", ""), c.get("severity", "error"), c.get("human", ""), c.get("expression"),
                   c.get("source"))
        for c in e.get("constraint", ())
    )
    return ElementDef(
        id=eid,
        path=path,
        name=last[:-3] if choice else last,
        min=int(e.get("min", 0) or 0),
        max=max_,
        is_array=base_max != 1 and base_max != 0,
        types=types,
        choice=choice,
        content_ref=cref[cref.index("#") + 1:] if cref and "#" in cref else cref,
        binding=binding,
        slice_name=e.get("sliceName"),
        raw=e,
        constraints=constraints,
        slicing=e.get("slicing"),
        fixed=_typed_value(e, "fixed"),
        pattern=_typed_value(e, "pattern"),
        min_value=_typed_value(e, "minValue"),
        max_value=_typed_value(e, "maxValue"),
        max_length=e.get("maxLength") if isinstance(e.get("maxLength"), int) else None,
        type_set=frozenset(t.code for t in types),
        has_type_profiles=any(t.profiles or t.target_profiles for t in types),
    )


def element_ids(elements: list[dict[str, Any]]) -> list[str]:
    """Ids for every element; derived from path and sliceName where missing (elementdefinition.html#id)."""
    out: list[str] = []
    last_id: dict[str, str] = {}

    def id_of(path: str) -> str:
        # The latest id given to this path, or to the nearest listed ancestor (a differential may
        # skip intermediate elements: Observation.component:a then Observation.component.code.text).
        if path in last_id:
            return last_id[path]
        parent, _, seg = path.rpartition(".")
        return f"{id_of(parent)}.{seg}" if parent else path

    for e in elements:
        path = e.get("path", "")
        eid = e.get("id")
        if not eid:
            parent_path, _, seg = path.rpartition(".")
            eid = f"{id_of(parent_path)}.{seg}" if parent_path else seg
            if e.get("sliceName"):
                eid = f"{eid}:{e['sliceName']}"
        last_id[path] = eid
        out.append(eid)
    return out


def _split_last(eid: str) -> tuple[str, str, str | None]:
    """``a.b:s.c:t`` → (``a.b:s``, ``c``, ``t``)."""
    parent, _, seg = eid.rpartition(".")
    name, _, slice_ = seg.partition(":")
    return parent, name, slice_ or None


def _mark_relevant(node: ElementDef, changed: set[str]) -> bool:
    below = [_mark_relevant(c, changed) for c in node.children] + [_mark_relevant(s, changed) for s in node.slices]
    node.relevant = node.id in changed or any(below)
    return node.relevant


def compile_structure(sd: dict[str, Any], elements: list[dict[str, Any]] | None = None,
                      changed: set[str] | None = None) -> StructureSchema:
    """Build the element tree of a StructureDefinition's snapshot (or of ``elements`` when given).

    ``changed``: ids of the elements a differential touched; the others are marked not relevant."""
    elems = elements if elements is not None else (sd.get("snapshot") or {}).get("element") or []
    if not elems:
        raise ValueError(f"StructureDefinition {sd.get('url')} has no snapshot")
    ids = element_ids(elems)
    by_id: dict[str, ElementDef] = {}
    root: ElementDef | None = None
    for e, eid in zip(elems, ids, strict=True):
        node = compile_element(e, eid)
        by_id[eid] = node
        if root is None:
            root = node
            continue
        parent_id, name, slice_ = _split_last(eid)
        if slice_ is not None:
            # A slice (or re-slice "a/b") hangs off the element it slices.
            base_slice, _, _ = slice_.rpartition("/")
            sliced_id = f"{parent_id}.{name}" + (f":{base_slice}" if base_slice else "")
            owner = by_id.get(sliced_id)
            if owner is not None:
                owner.slices.append(node)
                continue
        parent = by_id.get(parent_id)
        if parent is not None:
            parent.children.append(node)
    assert root is not None
    if changed is not None:
        _mark_relevant(root, changed)
    return StructureSchema(
        url=sd.get("url", ""),
        version=sd.get("version"),
        name=sd.get("name", ""),
        type=sd.get("type", root.path),
        kind=sd.get("kind", "resource"),
        derivation=sd.get("derivation"),
        abstract=bool(sd.get("abstract")),
        base_definition=sd.get("baseDefinition"),
        root=root,
        by_id=by_id,
        sd=sd,
    )
