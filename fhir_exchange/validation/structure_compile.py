"""The compiled form of a shape for the structural walk (:mod:`structure`): https://hl7.org/fhir/R4/json.html.

Per shape, once per definitions generation (the compiled form lives on the shape), a table from JSON
key to an entry ``(operation, property, x, step, invariants)``: the operation decides what the walk
would otherwise decide per value — primitive or complex, array or not, which JSON type, and whether
a descent must also collect a Reference, check a binding or record an invariant site. ``x`` is the
property's cache of clean strings (primitives), the lower bound (integers), the compiled content
(descents) or the shape (``OP_SPECIAL``). The walk inlines the common operations by their codes.
"""

from __future__ import annotations

from typing import Any, Final

from fhir_exchange.validation.primitives import JSON_BOOL, JSON_INT, JSON_NUMBER
from fhir_exchange.validation.shapes import PRIM, RESOURCE, Prop, Shape, ShapeBuilder

# Operations of a compiled shape's table (the walk in structure.py inlines 0, 1, 4, 5, 6, 12-17 by these codes).
# One table entry: (operation, Prop, its argument, the FHIRPath segment, invariant sites). Its exact
# tuple type lets the compiled walk unpack it in place and compare the operation as a machine int.
Entry = tuple[int, Any, Any, Any, Any]

OP_PRIM: Final = 0  # a primitive (string-valued, or any with a binding): cache of clean strings, then check
OP_BOOL: Final = 1  # boolean without binding
OP_INT: Final = 2  # integer types: e[2] is the lower bound
OP_DECIMAL: Final = 3
OP_PRIM_ARRAY: Final = 4
OP_COMPLEX: Final = 5  # a plain descent: no binding, reference, attachment, extension, invariants or resource
OP_COMPLEX_ARRAY: Final = 6
OP_SPECIAL: Final = 7  # a complex element that needs _complex (single)
OP_SPECIAL_ARRAY: Final = 8
OP_CHOICE: Final = 9  # a choice variant: e[2] is the operation once the one-variant rule is checked
OP_COMPANION: Final = 10  # ``_name`` of a primitive
OP_SKIP: Final = 11  # resourceType of a resource
OP_REF: Final = 12  # a Reference (collected for the references pass); e[4]: the invariants of Reference
OP_REF_ARRAY: Final = 13
OP_BOUND: Final = 14  # a coded element with a binding to check; e[4]: invariants of its type
OP_BOUND_ARRAY: Final = 15
OP_SITE: Final = 16  # a descent into a shape with invariants, for the walk that collects their sites
OP_SITE_ARRAY: Final = 17



INT_LOW: Final = {"integer": -(2**31), "unsignedInt": 0, "positiveInt": 1}


def compiled(shape: Shape, collect: bool) -> list[Any]:
    """The shape compiled for a walk that collects invariant sites or not: [table, required keys,
    shape, collect], the table filled on first use (types refer to each other cyclically)."""
    c = shape.compiled if collect else shape.lean_compiled
    if c is None:
        c = [None, None, shape, collect]
        if collect:
            shape.compiled = c
        else:
            shape.lean_compiled = c
    return c


def fill(c: list[Any], shapes: ShapeBuilder,
         check_bindings: bool) -> tuple[dict[str, Entry], frozenset[str] | None]:
    """The table: per JSON key, what to do with its value (decided once, not per value).

    A walk that collects invariant sites needs more than a descent into a shape with invariants."""
    shape: Shape = c[2]
    collect: bool = c[3]
    table: dict[str, Entry] = {}
    for key, p in shape.props.items():
        entry = _entry(p, collect, shapes, check_bindings)
        if p.choice:
            entry = (OP_CHOICE, p, entry, id(p.elem), None)
        table[key] = entry
        if p.kind == PRIM:
            table["_" + key] = (OP_COMPANION, p, None, None, None)
    if shape.resource_type is not None:
        table["resourceType"] = (OP_SKIP, None, None, None, None)
    # The first key of each required element: when all are there (one set comparison), every
    # required element is; the loop over ``required`` runs only when it is not so.
    required = frozenset(keys[0] for _, keys, _ in shape.required) or None
    c[1] = required
    c[0] = table  # last: a walk in another thread that sees the table sees the required keys
    return table, required


def _entry(p: Prop, collect: bool, shapes: ShapeBuilder, check_bindings: bool) -> Entry:
    if p.kind == PRIM:
        assert p.prim is not None
        code = p.prim.code
        if p.is_array:
            return (OP_PRIM_ARRAY, p, p.good, None, None)
        if p.binding is None:
            if code in JSON_BOOL:
                return (OP_BOOL, p, None, None, None)
            if code in JSON_INT:
                return (OP_INT, p, INT_LOW[code], None, None)
            if code in JSON_NUMBER:
                return (OP_DECIMAL, p, None, None, None)
        return (OP_PRIM, p, p.good, None, None)
    if p.kind == RESOURCE:
        return (OP_SPECIAL_ARRAY if p.is_array else OP_SPECIAL, p, None, p.segment, None)
    shape = shapes.resolve(p)
    sub = compiled(shape, collect)
    # Invariant sites of the content, collected by the walk that evaluates them.
    sites = shape.constraints if collect else ()
    bound = p.binding is not None and check_bindings
    if not shape.is_extension:
        if p.type_code == "Reference" and not bound:
            return (OP_REF_ARRAY if p.is_array else OP_REF, p, sub, p.segment, sites)
        if p.type_code != "Attachment" and p.type_code != "Reference":
            if bound:
                return (OP_BOUND_ARRAY if p.is_array else OP_BOUND, p, sub, p.segment, sites)
            if sites:
                return (OP_SITE_ARRAY if p.is_array else OP_SITE, p, sub, p.segment, sites)
            return (OP_COMPLEX_ARRAY if p.is_array else OP_COMPLEX, p, sub, p.segment, None)
    # Extensions, Attachments, resources, bound References: the general path (_complex).
    return (OP_SPECIAL_ARRAY if p.is_array else OP_SPECIAL, p, shape, p.segment, None)
