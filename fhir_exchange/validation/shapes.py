"""JSON shapes of FHIR types: https://hl7.org/fhir/R4/json.html.

A *shape* is what the structural walker needs about one kind of JSON object: the properties it may
carry (choice elements expanded to ``valueString``, ``valueQuantity``...; primitives with their
``_name`` companions), which are arrays, which are required, and for each property its primitive
checker or the shape of its content. Shapes are derived once from the element trees of the core
StructureDefinitions and then shared: every ``HumanName`` anywhere uses one shape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Final

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.native_invariants import NATIVE_INVARIANTS, NativeInvariant
from fhir_exchange.validation.primitives import PrimitiveType, build_primitive
from fhir_exchange.validation.schema import Binding, Constraint, ElementDef, StructureSchema, compile_structure

UNSET: Final[Any] = object()

PRIM: Final = 0
COMPLEX: Final = 1
RESOURCE: Final = 2

# Invariants checked natively by the walkers (faster, and with better messages than FHIRPath):
# ele-1 is "no empty elements", ext-1 the extension shape, dom-2..dom-6 the contained-resource rules.
NATIVE_CONSTRAINTS: Final = frozenset({"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6"})

# Types that carry codes a binding can apply to (terminologies.html#binding).
BINDABLE: Final = frozenset({"code", "Coding", "CodeableConcept", "Quantity", "string", "uri"})


@dataclass(slots=True, eq=False)
class Prop:
    key: str  # JSON property name
    segment: str  # FHIRPath step, e.g. "given" or "value.ofType(Quantity)"
    elem: ElementDef
    type_code: str
    kind: int
    is_array: bool
    prim: PrimitiveType | None
    binding: Binding | None
    owner: StructureSchema
    host: str  # path of the element whose object carries this property, e.g. "Patient.contact"
    host_type: str  # its type: "Patient", "HumanName", or "BackboneElement"
    shape: Shape | None = None  # resolved on first use: types refer to each other cyclically
    # String values already found clean here (format and binding): most values repeat across resources.
    good: set[str] = field(default_factory=set)
    good_codes: set[tuple[Any, ...]] = field(default_factory=set)  # (system, code)s that met the binding
    # Values (strings, or (system, code)s) that did not: their binding issues, without the path, with
    # the definitions generation they were found in.
    bad_codes: dict[Any, tuple[int, tuple[tuple[str, str, str, str], ...]]] = field(default_factory=dict)
    targets: Any = UNSET  # allowed reference target types, computed by the references pass
    choice: bool = False


@dataclass(slots=True, eq=False)
class Shape:
    name: str
    props: dict[str, Prop]
    # (FHIRPath step for the message, JSON keys any of which satisfies it, min)
    required: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    resource_type: str | None = None
    is_extension: bool = False
    # Invariants evaluated by FHIRPath on every object of this shape (native ones excluded).
    constraints: tuple[Constraint, ...] = ()
    # Invariants answered by native_invariants (ref-1 on Reference, bdl-* on Bundle and its entries):
    # the walk collects no site for them; the validator evaluates them over what the walk collected.
    native: tuple[tuple[Constraint, NativeInvariant], ...] = ()
    # Of a resource's shape: its direct children whose shapes have native invariants (Bundle.entry), as
    # (JSON key, is an array, their shape); filled on first use (ShapeBuilder.native_children).
    native_children: tuple[tuple[str, bool, Shape], ...] | None = None
    # Compiled by the structural walker on first use (structure.py): JSON key → what to do with its
    # value, for a walk that collects invariant sites and for one that does not.
    compiled: list[Any] | None = None
    lean_compiled: list[Any] | None = None


@dataclass(slots=True, eq=False)
class _Plan:
    """What ``descendants().ofType(T)`` visits in an object of one shape: per JSON key, whether its
    values are of type T (collected) and the plan of their content (None: a resource, whose shape
    its ``resourceType`` tells). ``keys``: the keys of ``steps``, so that an object with none of
    them (most Codings, Periods, Identifiers...) is not entered."""
    steps: dict[str, tuple[bool, _Plan | None]]
    keys: frozenset[str]


_LEAF: Final = _Plan({}, frozenset())  # a primitive: nothing below


def json_key(name: str, code: str, choice: bool) -> str:
    return name + code[0].upper() + code[1:] if choice else name


class ShapeBuilder:
    """Builds and caches shapes and compiled schemas of the core types."""

    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self._lock = threading.RLock()
        self._generation = -1
        self._schemas: dict[str, StructureSchema | None] = {}
        self._shapes: dict[tuple[str, str], Shape] = {}
        self._prims: dict[str, PrimitiveType] = {}
        self._type_kind: dict[str, str | None] = {}
        self._concrete: dict[str, Shape] = {}
        self._id_prim: PrimitiveType | None = None
        # (shape or resource type, type code) -> its plan for descendants().ofType(type code)
        self._plans: dict[tuple[Any, str], _Plan | None] = {}

    def _check_generation(self) -> None:
        if self._generation != self.defs.generation:
            self._schemas.clear()
            self._shapes.clear()
            self._prims.clear()
            self._type_kind.clear()
            self._concrete.clear()
            self._plans.clear()
            self._generation = self.defs.generation

    def schema(self, type_code: str) -> StructureSchema | None:
        """The compiled base StructureDefinition of a type (``Patient``, ``HumanName``, ``string``)."""
        s = self._schemas.get(type_code)
        if s is not None or type_code in self._schemas:
            return s
        with self._lock:
            self._check_generation()
            sd = self.defs.structure_definition(type_code)
            s = compile_structure(sd) if sd and sd.get("snapshot") else None
            self._schemas[type_code] = s
            return s

    def kind(self, type_code: str) -> str | None:
        if type_code not in self._type_kind:
            s = self.schema(type_code)
            self._type_kind[type_code] = s.kind if s else None
        return self._type_kind[type_code]

    def primitive(self, code: str) -> PrimitiveType:
        p = self._prims.get(code)
        if p is None:
            p = build_primitive(code, self.defs.structure_definition(code))
            self._prims[code] = p
        return p

    def resource_shape(self, resource_type: str) -> Shape | None:
        s = self.schema(resource_type)
        if s is None or s.kind != "resource":
            return None
        return self.element_shape(s, s.root)

    def concrete_resource_shape(self, resource_type: str) -> Shape | None:
        """The shape of a resource type an instance may have (not abstract), or None."""
        shape = self._concrete.get(resource_type)
        if shape is not None:
            return shape
        with self._lock:
            self._check_generation()
            shape = self.resource_shape(resource_type)
            schema = self.schema(resource_type)
            if shape is None or schema is None or schema.abstract:
                return None  # not remembered: the type comes from the client
            self._concrete[resource_type] = shape
            return shape

    def native_children(self, shape: Shape) -> tuple[tuple[str, bool, Shape], ...]:
        """The children of a resource's shape whose objects have native invariants (Shape.native)."""
        found = shape.native_children
        if found is None:
            found = shape.native_children = tuple(
                (key, p.is_array, child) for key, p in shape.props.items()
                if p.kind == COMPLEX and p.elem.children and (child := self.resolve(p)).native)
        return found

    def type_shape(self, type_code: str) -> Shape | None:
        s = self.schema(type_code)
        if s is None:
            return None
        return self.element_shape(s, s.root)

    def element_shape(self, schema: StructureSchema, elem: ElementDef) -> Shape:
        key = (schema.url, elem.id)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        with self._lock:
            self._check_generation()
            shape = self._shapes.get(key)
            if shape is None:
                shape = self._build(schema, elem)
                self._shapes[key] = shape
            return shape

    def resolve(self, prop: Prop) -> Shape:
        """The shape of a complex property's content (cached on the prop)."""
        shape = prop.shape
        if shape is not None:
            return shape
        elem = prop.elem
        if elem.children:
            shape = self.element_shape(prop.owner, elem)
        elif elem.content_ref:
            target = prop.owner.by_id.get(elem.content_ref)
            shape = self.element_shape(prop.owner, target) if target else Shape(elem.content_ref, {})
        else:
            shape = self.type_shape(prop.type_code) or Shape(prop.type_code, {})
        prop.shape = shape
        return shape

    def _build(self, schema: StructureSchema, elem: ElementDef) -> Shape:
        is_resource_root = elem is schema.root and schema.kind == "resource"
        shape = Shape(
            name=elem.path,
            props={},
            resource_type=schema.type if is_resource_root else None,
            is_extension=elem is schema.root and schema.type == "Extension",
            constraints=tuple(c for c in elem.constraints if c.key not in NATIVE_CONSTRAINTS and c.expression
                              and c.expression not in NATIVE_INVARIANTS),
            native=tuple((c, NATIVE_INVARIANTS[c.expression]) for c in elem.constraints
                         if c.key not in NATIVE_CONSTRAINTS and c.expression in NATIVE_INVARIANTS),
        )
        host_type = schema.type if elem is schema.root else "BackboneElement"
        for child in elem.children:
            if child.max == 0:
                continue
            keys: list[str] = []
            for t in child.types or ():
                code = t.code
                kind = self.kind(code) if code not in ("Resource", "DomainResource") else "resource"
                if kind == "primitive-type" or (kind is None and code[:1].islower()):
                    prim = self.primitive(code)
                    if is_resource_root and child.name == "id":
                        # Resource.id is declared as System.String but is the id type (resource.html#id).
                        prim = self._resource_id()
                    pkind = PRIM
                elif kind == "resource":
                    prim, pkind = None, RESOURCE
                else:
                    prim, pkind = None, COMPLEX
                k = json_key(child.name, code, child.choice)
                segment = f"{child.name}.ofType({code})" if child.choice else child.name
                binding = child.binding if (child.binding and child.binding.value_set and code in BINDABLE
                                            and child.binding.strength in ("required", "extensible")) else None
                shape.props[k] = Prop(k, segment, child, code, pkind, child.is_array, prim, binding, schema,
                                      elem.path, host_type, choice=child.choice)
                keys.append(k)
                if pkind == PRIM:
                    keys.append("_" + k)
            if not child.types and (child.children or child.content_ref):
                # contentReference elements carry no type; their content is another element's.
                k = child.name
                shape.props[k] = Prop(k, k, child, "BackboneElement", COMPLEX, child.is_array, None, None, schema,
                                      elem.path, host_type)
                keys.append(k)
            if child.min > 0 and keys and not (shape.is_extension and child.name == "url"):
                shape.required.append((child.name, tuple(keys), child.min))
        return shape

    def _resource_id(self) -> PrimitiveType:
        if self._id_prim is None:
            base = self.primitive("id")
            self._id_prim = PrimitiveType("id", base.regex, base.check)
        return self._id_prim

    def descendants_of_type(self, items: list[Any], type_code: str) -> list[Any]:
        """FHIRPath ``descendants().ofType(T)`` for resources: the types come from the definitions.

        Raises ``ValueError`` for an item that is not a resource (its type is unknown here)."""
        if self._generation != self.defs.generation:
            with self._lock:
                self._check_generation()
        out: list[Any] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
                raise ValueError("descendants of a non-resource")
            plan = self._resource_plan(item["resourceType"], type_code)
            if plan is not None:
                self._collect(item, plan, type_code, out)
        return out

    def _resource_plan(self, resource_type: str, type_code: str) -> _Plan | None:
        plan = self._plans.get((resource_type, type_code))
        if plan is None and (resource_type, type_code) not in self._plans:
            shape = self.resource_shape(resource_type)
            plan = None if shape is None else self._plan(shape, type_code)
            self._plans[(resource_type, type_code)] = plan
        return plan

    def _plan(self, shape: Shape, type_code: str) -> _Plan:
        """The plan of ``shape`` for ``type_code`` and of every shape its content can have: built
        together (types refer to each other cyclically), published when complete."""
        with self._lock:
            found = self._plans.get((shape, type_code))
            if found is not None:
                return found
            building: dict[Shape, _Plan] = {}
            todo: list[Shape] = []

            def plan_of(sh: Shape) -> _Plan:
                known = self._plans.get((sh, type_code)) or building.get(sh)
                if known is None:
                    known = building[sh] = _Plan({}, frozenset())
                    todo.append(sh)
                return known

            root = plan_of(shape)
            while todo:
                sh = todo.pop()
                steps = building[sh].steps
                for key, p in sh.props.items():
                    if p.kind == RESOURCE:
                        steps[key] = (False, None)
                    elif p.kind == PRIM:
                        # Most properties are primitives of another type: nothing to collect, nothing below.
                        if p.type_code == type_code:
                            steps[key] = (True, _LEAF)
                    else:
                        steps[key] = (p.type_code == type_code, plan_of(self.resolve(p)))
            for plan in building.values():
                plan.keys = frozenset(plan.steps)
            self._plans.update({(sh, type_code): plan for sh, plan in building.items()})
            return root

    def _collect(self, obj: dict[str, Any], plan: _Plan, type_code: str, out: list[Any]) -> None:
        # Depth first, in the order of the object's keys (the order descendants() has always had).
        steps = plan.steps
        for key, value in obj.items():
            step = steps.get(key)
            if step is None:
                continue
            # A list and a single value apart: no (value,) tuple and no generic iterator per key.
            if isinstance(value, list):
                for v in value:
                    if v is not None:
                        self._collect_value(v, step, type_code, out)
            elif value is not None:
                self._collect_value(value, step, type_code, out)

    def _collect_value(self, v: Any, step: tuple[bool, _Plan | None], type_code: str, out: list[Any]) -> None:
        take, content = step
        if content is None:  # a resource (contained, Bundle.entry.resource...)
            if isinstance(v, dict) and isinstance(v.get("resourceType"), str):
                rt: str = v["resourceType"]
                if type_code == rt or type_code == "Resource" or type_code == "DomainResource":
                    out.append(v)
                inner = self._resource_plan(rt, type_code)
                if inner is not None:
                    self._collect(v, inner, type_code, out)
            return
        if take:
            out.append(v)
        # Most objects (a Coding, a Period) carry none of the keys that can lead further.
        if isinstance(v, dict) and not content.keys.isdisjoint(v):
            self._collect(v, content, type_code, out)
