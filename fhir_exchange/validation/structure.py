"""Structural validation of JSON resources: https://hl7.org/fhir/R4/json.html and https://hl7.org/fhir/R4/validation.html#structure.

One pass over the parsed JSON against the shapes of the core definitions checks what the JSON
representation itself requires: known properties only, arrays exactly where the base cardinality
is more than one (and never empty), no empty objects, ``null`` only as a placeholder aligned with a
``_name`` companion array, primitive JSON types and lexical forms, one choice variant at a time,
minimum cardinalities, ``resourceType`` on every resource (contained ones, Bundle entries,
Parameters values — each checked as a resource of its own type), extension shape (url, and a value
or nested extensions, never both), and bindings through the local terminology.

Expressions name the exact element (``Patient.name[0].given[1]``, ``Observation.value.ofType(Quantity)``).
The walker is written for speed. Each shape is compiled once (per definitions generation, with the
shape) into a table: JSON key → what to do with its value, decided at compile time rather than per
value (:mod:`structure_compile`). Paths are not built during the walk: a location is a
tuple (parent, step[, index]) rendered into ``Patient.name[0].given`` only when an issue or a later
pass needs it (:func:`render`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fhir_exchange.validation.bindings import check_binding
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.primitives import INT32_MAX, json_type_name
from fhir_exchange.validation.shapes import RESOURCE, Prop, Shape, ShapeBuilder
from fhir_exchange.validation.structure_compile import (
    OP_BOOL,
    OP_BOUND,
    OP_CHOICE,
    OP_COMPANION,
    OP_COMPLEX,
    OP_DECIMAL,
    OP_INT,
    OP_PRIM,
    OP_PRIM_ARRAY,
    OP_REF,
    OP_SITE,
    OP_SKIP,
    OP_SPECIAL,
    OP_SPECIAL_ARRAY,
    Entry,
    compiled,
    fill,
)
from fhir_exchange.validation.terminology import Terminology

GOOD_CACHE_SIZE: Final = 2048
# JSON objects nested deeper than this are refused as a whole ("too-deep"), by the walk itself: the
# same limit with or without the compiled build, whose recursion the interpreter does not bound
# (real resources nest a few dozen objects deep; JSON bodies are at most 1,024 levels).
MAX_NESTING: Final = 256

# A location: the resource's path (a str), or (parent, step) or (parent, step, index).
Loc = Any

def render(loc: Loc) -> str:
    """The FHIRPath-like expression of a location (``Patient.name[0].given``)."""
    if type(loc) is str:
        return loc
    if len(loc) == 2:
        return render(loc[0]) + "." + loc[1]
    return f"{render(loc[0])}.{loc[1]}[{loc[2]}]"


def coding_key(value: Any, type_code: str) -> tuple[Any, ...] | None:
    """(system, code) pairs of a coded value, or None when it is malformed (the walk reports it)."""
    if type_code == "CodeableConcept":
        if type(value) is not dict:
            return None
        codings = value.get("coding")
        if type(codings) is not list:
            return None
        if len(codings) == 1:  # the common case, without the loop
            pair = _pair(codings[0])
            return None if pair is None else (pair,)
        pairs = []
        for c in codings:
            pair = _pair(c)
            if pair is None:
                return None
            pairs.append(pair)
        return tuple(pairs)
    return _pair(value)


def _pair(c: Any) -> tuple[str | None, str | None] | None:
    if type(c) is not dict:
        return None
    system, code = c.get("system"), c.get("code")
    if (system is None or type(system) is str) and (code is None or type(code) is str):
        return (system, code)
    return None


class Visited:
    """A node met during the walk that a later pass needs: no pass walks the JSON again.

    ``path`` and ``resource_path`` are rendered from the walk's locations on first use."""

    __slots__ = ("_loc", "_rloc", "elem_path", "extra", "node", "resource", "type_code")

    def __init__(self, node: Any, loc: Loc, resource: Any, rloc: Loc, type_code: str,
                 elem_path: str, extra: Any = None) -> None:
        self.node = node
        self._loc = loc  # the location, replaced by its rendering on first use
        self.resource: dict[str, Any] = resource  # the resource the node belongs to (contained ones are their own)
        self._rloc = rloc
        self.type_code = type_code  # FHIR type (or element path for backbone elements)
        self.elem_path = elem_path  # the defining element's path, e.g. "Patient.birthDate" for an extension's host
        self.extra = extra

    @property
    def location(self) -> Loc:
        """The location as the walk made it (or its rendering, once rendered): for a caller that
        renders it only when it reports an issue."""
        return self._loc

    @property
    def path(self) -> str:
        loc = self._loc
        if type(loc) is str:
            return loc
        p = self._loc = render(loc)
        return p

    @property
    def resource_path(self) -> str:
        loc = self._rloc
        if type(loc) is str:
            return loc
        p = self._rloc = render(loc)
        return p

    def __repr__(self) -> str:
        return f"Visited({self.type_code} at {self.path})"


class WalkContext:
    """What one structural walk found, for the passes after it (a plain class: a dataclass keeps an
    interpreted ``__init__`` in the compiled build)."""

    __slots__ = ("attachments", "collect_invariants", "companion_references", "depth", "extensions", "host",
                 "invariants", "references", "resource", "resource_path", "resources", "sink")

    def __init__(self, sink: IssueSink, *, collect_invariants: bool = True) -> None:
        self.sink = sink
        self.resources: list[Visited] = []  # every resource, container after contained
        # extra: (is_modifier, host type); elem_path is the host element's path
        self.extensions: list[Visited] = []
        # extra: the Prop. In the order descendants() meets them (each before its own content).
        self.references: list[Visited] = []
        # How many of them are in a primitive's ``_name`` extensions, where descendants() does not go.
        self.companion_references = 0
        self.invariants: list[Visited] = []  # extra: tuple of Constraints
        self.attachments: list[Visited] = []
        self.resource: dict[str, Any] | None = None
        self.resource_path: Loc = ""
        # (element path, type) hosting the extensions being walked, when not the shape's own element
        self.host: tuple[str, str] | None = None
        # Invariant sites are collected only for a validator that evaluates invariants.
        self.collect_invariants = collect_invariants
        self.depth = 0  # objects being walked, outermost to innermost (MAX_NESTING)


class StructureWalker:
    def __init__(self, shapes: ShapeBuilder, terminology: Terminology, *, check_bindings: bool = True) -> None:
        self.shapes = shapes
        self.tx = terminology
        self.check_bindings = check_bindings
        self._element_shape: Shape | None = None
        self._walk = self._make_walk()

    def _companion_shape(self) -> Shape:
        # ``_name`` objects carry what Element carries: id and extension.
        if self._element_shape is None:
            self._element_shape = self.shapes.type_shape("Element") or Shape("Element", {})
        return self._element_shape

    # -- compilation (structure_compile.py) ---------------------------------------------------------

    def _fill(self, c: list[Any]) -> tuple[dict[str, Entry], frozenset[str] | None]:
        return fill(c, self.shapes, self.check_bindings)

    # -- the walk --------------------------------------------------------------------------------

    def validate_resource(self, res: Any, path: Loc, ctx: WalkContext, *,
                          expected_type: str | None = None) -> str | None:
        """Validate a resource; returns its type when it could be determined."""
        sink = ctx.sink
        if type(res) is not dict:
            sink.error("structure", MsgId.NOT_OBJECT,
                       f"A resource must be a JSON object, not {json_type_name(res)}", render(path) or None)
            return None
        rt = res.get("resourceType")
        if rt is None:
            sink.error("structure", MsgId.RESOURCE_TYPE_MISSING, "The resource has no resourceType property",
                       render(path) or None)
            return None
        if type(rt) is not str:
            sink.error("structure", MsgId.RESOURCE_TYPE_UNKNOWN, "resourceType must be a string",
                       render(path) or None)
            return None
        shape = self.shapes.concrete_resource_shape(rt)
        if shape is None:
            sink.error("structure", MsgId.RESOURCE_TYPE_UNKNOWN, f"Unknown resource type '{rt}'",
                       render(path) or None)
            return None
        if expected_type is not None and rt != expected_type:
            sink.error("invalid", MsgId.RESOURCE_TYPE_MISMATCH,
                       f"Expected a {expected_type} resource, got {rt}", render(path) or rt)
        here = path or rt
        outer, outer_path = ctx.resource, ctx.resource_path
        ctx.resource, ctx.resource_path = res, here
        try:
            self._walk(res, compiled(shape, ctx.collect_invariants), here, ctx)
            if shape.constraints and ctx.collect_invariants:
                ctx.invariants.append(Visited(res, here, res, here, rt, rt, shape.constraints))
        finally:
            ctx.resource, ctx.resource_path = outer, outer_path
        ctx.resources.append(Visited(res, here, res, here, rt, rt, outer))
        return rt

    def _make_walk(self) -> Callable[[dict[str, Any], list[Any], Loc, WalkContext], None]:
        """The hot loop of validation, as a closure: everything it calls is a local or a cell.

        One table lookup per key; the common operations are inlined (their codes as literals, see
        OP_*, in order of frequency), the others go to :meth:`_rare`; locations are built only for
        descents."""
        fill = self._fill
        prim_single = self._prim_single
        prim_item = self._prim_item
        complex_single = self._complex_single
        complex_ = self._complex
        array_shape = self._array_shape
        required_ = self._required
        unknown = self._unknown
        rare = self._rare
        site = self._site
        bind = self._bind

        def walk(obj: dict[str, Any], c: list[Any], loc: Loc, ctx: WalkContext) -> None:
            depth = ctx.depth = ctx.depth + 1
            if depth > MAX_NESTING:
                raise RecursionError(f"JSON objects nested more than {MAX_NESTING} deep")
            table: dict[str, Entry] | None = c[0]
            required: frozenset[str] | None = c[1]
            shape = c[2]
            if table is None:
                table, required = fill(c)
            choices: set[int] | None = None
            for key, value in obj.items():
                try:
                    entry: Entry = table[key]
                except KeyError:
                    unknown(key, shape, loc, ctx)
                    continue
                op, p, x, seg, sites = entry
                if op == 0:  # OP_PRIM
                    if type(value) is str and value in x:
                        continue
                    prim_single(key, value, p, loc, ctx)
                elif op == 5:  # OP_COMPLEX
                    if type(value) is dict and value:
                        walk(value, x, (loc, seg), ctx)
                    else:
                        complex_single(key, value, p, loc, ctx)
                elif op == 6:  # OP_COMPLEX_ARRAY
                    if type(value) is not list or not value:
                        array_shape(key, value, p, loc, ctx)
                        continue
                    for i, item in enumerate(value):
                        if type(item) is dict and item:
                            walk(item, x, (loc, seg, i), ctx)
                        else:
                            complex_(item, p, (loc, seg, i), ctx)
                elif op == 12:  # OP_REF
                    if type(value) is dict and value:
                        here: Loc = (loc, seg)
                        # Before its content: the references in the order descendants() visits them.
                        ref_prop: Prop = p  # typed: its fields read directly in the compiled build
                        ctx.references.append(Visited(value, here, ctx.resource, ctx.resource_path, "Reference",
                                                      ref_prop.elem.path, ref_prop))
                        walk(value, x, here, ctx)
                        if sites:
                            site(value, here, p, x, ctx)
                    else:
                        complex_single(key, value, p, loc, ctx)
                elif op == 14:  # OP_BOUND
                    if type(value) is dict and value:
                        here = (loc, seg)
                        walk(value, x, here, ctx)
                        if sites:
                            site(value, here, p, x, ctx)
                        bind(value, p, here, ctx.sink)
                    else:
                        complex_single(key, value, p, loc, ctx)
                elif op == 16:  # OP_SITE
                    if type(value) is dict and value:
                        here = (loc, seg)
                        walk(value, x, here, ctx)
                        site(value, here, p, x, ctx)
                    else:
                        complex_single(key, value, p, loc, ctx)
                elif op == 13 or op == 15 or op == 17:  # OP_REF_ARRAY, OP_BOUND_ARRAY, OP_SITE_ARRAY
                    if type(value) is not list or not value:
                        array_shape(key, value, p, loc, ctx)
                        continue
                    for i, item in enumerate(value):
                        here = (loc, seg, i)
                        if type(item) is not dict or not item:
                            complex_(item, p, here, ctx)
                            continue
                        if op == 13:
                            ref_prop = p
                            ctx.references.append(Visited(item, here, ctx.resource, ctx.resource_path, "Reference",
                                                          ref_prop.elem.path, ref_prop))
                        walk(item, x, here, ctx)
                        if sites:
                            site(item, here, p, x, ctx)
                        if op == 15:
                            bind(item, p, here, ctx.sink)
                elif op == 4:  # OP_PRIM_ARRAY
                    if type(value) is not list or not value:
                        array_shape(key, value, p, loc, ctx)
                        continue
                    for i, item in enumerate(value):
                        if type(item) is not str or item not in x:
                            prim_item(obj, key, item, p, loc, i, ctx)
                elif op == 1:  # OP_BOOL
                    if value is True or value is False:
                        continue
                    prim_single(key, value, p, loc, ctx)
                else:
                    choices = rare(obj, key, value, op, p, x, seg, sites, loc, ctx, choices)
            if required is not None and not obj.keys() >= required:
                required_(obj, shape, loc, ctx.sink)
            ctx.depth = depth - 1

        self._walk_one = walk
        return walk

    def _rare(self, obj: dict[str, Any], key: str, value: Any, op: int, p: Any, x: Any, seg: Any, sites: Any,
              loc: Loc, ctx: WalkContext, choices: set[int] | None) -> set[int] | None:
        """Every operation, for those the walk does not inline (choices, companions, integers...).

        ``p`` is typed ``Any``: the table's entry for ``resourceType`` has no Prop (OP_SKIP), and the
        compiled build (:mod:`fhir_exchange.native`) checks annotations at run time."""
        if op == OP_CHOICE:
            if choices is None:
                choices = set()
            if seg in choices:
                ctx.sink.error("structure", MsgId.CHOICE_MULTIPLE,
                               f"Only one of the {p.elem.name}[x] variants may be present", f"{render(loc)}.{key}")
            choices.add(seg)
            variant: Entry = x
            op, p, x, seg, sites = variant
        if op == OP_PRIM:
            if not (type(value) is str and value in x):
                self._prim_single(key, value, p, loc, ctx)
        elif op == OP_BOOL:
            if not (value is True or value is False):
                self._prim_single(key, value, p, loc, ctx)
        elif op == OP_INT:
            if not (type(value) is int and x <= value <= INT32_MAX):
                self._prim_single(key, value, p, loc, ctx)
        elif op == OP_DECIMAL:
            if not (type(value) is int or type(value) is float):
                self._prim_single(key, value, p, loc, ctx)
        elif op == OP_COMPANION:
            self._companion(obj, key, value, p, loc, ctx)
        elif op == OP_SKIP:
            pass
        elif op in (OP_COMPLEX, OP_REF, OP_BOUND, OP_SITE, OP_SPECIAL):
            if op != OP_SPECIAL and type(value) is dict and value:
                self._descend(value, op, p, x, (loc, seg), sites, ctx)
            else:
                self._complex_single(key, value, p, loc, ctx)
        elif type(value) is not list or not value:  # the array operations
            self._array_shape(key, value, p, loc, ctx)
        elif op == OP_PRIM_ARRAY:
            for i, item in enumerate(value):
                if type(item) is not str or item not in x:
                    self._prim_item(obj, key, item, p, loc, i, ctx)
        else:
            for i, item in enumerate(value):
                if op != OP_SPECIAL_ARRAY and type(item) is dict and item:
                    self._descend(item, op - 1, p, x, (loc, seg, i), sites, ctx)
                else:
                    self._complex(item, p, (loc, seg, i), ctx)
        return choices

    def _descend(self, value: dict[str, Any], op: int, p: Prop, c: list[Any], here: Loc, sites: Any,
                 ctx: WalkContext) -> None:
        """A non-empty object of a COMPLEX, REF or BOUND element (the inlined code, once more)."""
        if op == OP_REF:  # before its content, as in the walk
            assert ctx.resource is not None
            ctx.references.append(Visited(value, here, ctx.resource, ctx.resource_path, "Reference",
                                          p.elem.path, p))
        self._walk_one(value, c, here, ctx)
        if sites:
            self._site(value, here, p, c, ctx)
        if op == OP_BOUND:
            self._bind(value, p, here, ctx.sink)

    def _site(self, value: dict[str, Any], loc: Loc, p: Prop, c: list[Any], ctx: WalkContext) -> None:
        shape: Shape = c[2]
        assert ctx.resource is not None
        ctx.invariants.append(Visited(value, loc, ctx.resource, ctx.resource_path, p.type_code, shape.name,
                                      shape.constraints))

    def _bind(self, value: dict[str, Any], p: Prop, loc: Loc, sink: IssueSink) -> None:
        # Codings repeat across resources: the verdict on a (system, code) set is remembered per
        # element — clean ones as such, others with their issues (a pure function of the codes).
        key = coding_key(value, p.type_code)
        if key is None:
            assert p.binding is not None
            check_binding(self.tx, p.binding, p.type_code, value, render(loc), sink)
            return
        if key in p.good_codes:
            return
        self._verdict(p.bad_codes, p.good_codes, key, value, p, render(loc), sink)

    def _verdict(self, bad: dict[Any, tuple[int, tuple[tuple[str, str, str, str], ...]]], good: set[Any],
                 key: Any, value: Any, p: Prop, path: str, sink: IssueSink) -> None:
        """The binding's issues on a value not known to be clean: remembered ones (of this definitions
        generation: a CodeSystem added since may make the code valid), or found now."""
        generation = self.shapes.defs.generation
        known = bad.get(key)
        if known is None or known[0] != generation:
            assert p.binding is not None
            fresh = IssueSink()
            check_binding(self.tx, p.binding, p.type_code, value, path, fresh)
            issues = fresh.since(0)
            if not issues:
                if len(good) < GOOD_CACHE_SIZE:
                    good.add(key)
                return
            known = (generation, tuple((i.severity, i.code, i.message_id or "", i.diagnostics) for i in issues))
            if len(bad) < GOOD_CACHE_SIZE:
                bad[key] = known
        for severity, code, message_id, diagnostics in known[1]:
            sink.add(severity, code, message_id, diagnostics, path)

    def _unknown(self, key: str, shape: Shape, loc: Loc, ctx: WalkContext) -> None:
        ctx.sink.error("structure", MsgId.UNKNOWN_ELEMENT, f"Unrecognised property '{key}' in {shape.name}",
                       f"{render(loc)}.{key}")

    def _required(self, obj: dict[str, Any], shape: Shape, loc: Loc, sink: IssueSink) -> None:
        for name, keys, minimum in shape.required:
            for k in keys:
                if k in obj:
                    break
            else:
                # The expression names the missing element under its parent (Patient.link[0].other):
                # empty in the instance, but it tells a client exactly which field to fill.
                sink.error("required", MsgId.CARDINALITY_MIN,
                           f"{shape.name}.{name}: minimum required = {minimum}, but only found 0",
                           f"{render(loc)}.{name}")

    def _array_shape(self, key: str, value: Any, p: Prop, loc: Loc, ctx: WalkContext) -> None:
        """An array property that is not a non-empty array."""
        if type(value) is not list:
            ctx.sink.error("structure", MsgId.ARRAY_EXPECTED,
                           f"'{key}' must be a JSON array (its cardinality is more than one)",
                           render(loc) + "." + p.segment)
        else:
            ctx.sink.error("structure", MsgId.EMPTY_ARRAY, f"'{key}' must not be an empty array",
                           render(loc) + "." + p.segment)

    def _prim_single(self, key: str, value: Any, p: Prop, loc: Loc, ctx: WalkContext) -> None:
        """A property of cardinality at most one that is not a clean value (a primitive, or an array)."""
        sink = ctx.sink
        if value is None:
            sink.error("structure", MsgId.NULL_VALUE, f"'{key}' must not be null", render(loc) + "." + p.segment)
        elif type(value) is list:
            sink.error("structure", MsgId.ARRAY_UNEXPECTED,
                       f"'{key}' must not be an array (its cardinality is at most one)", render(loc) + "." + p.segment)
        else:
            self._primitive(value, p, loc, -1, sink)

    def _prim_item(self, obj: dict[str, Any], key: str, item: Any, p: Prop, loc: Loc, i: int,
                   ctx: WalkContext) -> None:
        if item is None:
            companion = obj.get("_" + key)
            if not (type(companion) is list and i < len(companion) and companion[i] is not None):
                ctx.sink.error("structure", MsgId.NULL_VALUE,
                               "null is only allowed in an array of primitives where the "
                               f"_{key} array holds the element's id or extensions",
                               f"{render(loc)}.{p.segment}[{i}]")
            return
        self._primitive(item, p, loc, i, ctx.sink)

    def _complex_single(self, key: str, value: Any, p: Prop, loc: Loc, ctx: WalkContext) -> None:
        if type(value) is list:
            ctx.sink.error("structure", MsgId.ARRAY_UNEXPECTED,
                           f"'{key}' must not be an array (its cardinality is at most one)",
                           render(loc) + "." + p.segment)
        else:
            self._complex(value, p, (loc, p.segment), ctx)

    def _primitive(self, value: Any, p: Prop, parent: Loc, index: int, sink: IssueSink) -> None:
        prim = p.prim
        assert prim is not None
        failure = prim.check(value)
        if failure is None and p.binding is None:
            if type(value) is str and len(p.good) < GOOD_CACHE_SIZE:
                p.good.add(value)
            return
        path = f"{render(parent)}.{p.segment}" if index < 0 else f"{render(parent)}.{p.segment}[{index}]"
        if failure is not None:
            msg_id, code, diag = failure
            if msg_id == MsgId.PRIMITIVE_WHITESPACE:
                sink.warning(code, msg_id, diag, path)
                return
            if msg_id == MsgId.PRIMITIVE_FORMAT and p.key == "id" and prim.code == "id":
                msg_id = MsgId.ID_FORMAT
            sink.error(code, msg_id, diag, path)
            return
        if p.binding is not None and self.check_bindings:
            if type(value) is str:
                self._verdict(p.bad_codes, p.good, value, value, p, path, sink)
                return
            check_binding(self.tx, p.binding, p.type_code, value, path, sink)
            return
        if type(value) is str and len(p.good) < GOOD_CACHE_SIZE:
            p.good.add(value)

    def _complex(self, value: Any, p: Prop, loc: Loc, ctx: WalkContext) -> None:
        if p.kind == RESOURCE:
            self.validate_resource(value, loc, ctx)
            return
        sink = ctx.sink
        if type(value) is not dict:
            sink.error("structure", MsgId.OBJECT_EXPECTED,
                       f"'{p.key}' must be a JSON object ({p.type_code}), not {json_type_name(value)}", render(loc))
            return
        if not value:
            sink.error("structure", MsgId.EMPTY_OBJECT, f"'{p.key}' must not be an empty object", render(loc))
            return
        shape = p.shape or self.shapes.resolve(p)
        res = ctx.resource
        assert res is not None
        if p.type_code == "Reference":  # before its content, as in the walk
            ctx.references.append(Visited(value, loc, res, ctx.resource_path, "Reference", p.elem.path, p))
        if shape.is_extension:
            outer_host = ctx.host
            host = outer_host or (p.host, p.host_type)
            ctx.host = None
            try:
                self._walk(value, compiled(shape, ctx.collect_invariants), loc, ctx)
            finally:
                ctx.host = outer_host
            self._extension_shape(value, loc, sink)
            ctx.extensions.append(Visited(value, loc, res, ctx.resource_path, "Extension", host[0],
                                          (p.key == "modifierExtension", host[1])))
        else:
            self._walk(value, compiled(shape, ctx.collect_invariants), loc, ctx)
        if p.type_code == "Attachment":
            ctx.attachments.append(Visited(value, loc, res, ctx.resource_path, "Attachment", p.elem.path))
        if shape.constraints and ctx.collect_invariants:
            # shape.name, not the element's path: a contentReference element (Parameters.parameter.part)
            # has the type of the element it refers to (Parameters.parameter).
            ctx.invariants.append(Visited(value, loc, res, ctx.resource_path, p.type_code, shape.name,
                                          shape.constraints))
        if p.binding is not None and self.check_bindings:
            self._bind(value, p, loc, sink)

    def _companion(self, obj: dict[str, Any], key: str, value: Any, p: Prop, loc: Loc, ctx: WalkContext) -> None:
        """``_name``: the id and extensions of a primitive (json.html#primitive)."""
        sink = ctx.sink
        here = (loc, p.segment)
        shape = self._companion_shape()
        name = key[1:]
        if p.is_array:
            if type(value) is not list:
                sink.error("structure", MsgId.ARRAY_EXPECTED, f"'{key}' must be a JSON array", render(here))
                return
            values = obj.get(name)
            if values is not None and (type(values) is not list or len(values) != len(value)):
                sink.error("structure", MsgId.COMPANION_MISALIGNED,
                           f"'{key}' must have as many entries as '{name}'", render(here))
            if not value:
                sink.error("structure", MsgId.EMPTY_ARRAY, f"'{key}' must not be an empty array", render(here))
            for i, item in enumerate(value):
                if item is None:
                    has_value = type(values) is list and i < len(values) and values[i] is not None
                    if not has_value:
                        sink.error("structure", MsgId.NULL_VALUE,
                                   f"'{key}[{i}]' and '{name}[{i}]' must not both be null", f"{render(here)}[{i}]")
                    continue
                self._element(item, key, shape, (loc, p.segment, i), p, ctx)
        else:
            if type(value) is list:
                sink.error("structure", MsgId.ARRAY_UNEXPECTED, f"'{key}' must not be an array", render(here))
                return
            self._element(value, key, shape, here, p, ctx)

    def _element(self, value: Any, key: str, shape: Shape, loc: Loc, p: Prop, ctx: WalkContext) -> None:
        sink = ctx.sink
        if type(value) is not dict:
            sink.error("structure", MsgId.OBJECT_EXPECTED, f"'{key}' entries must be JSON objects", render(loc))
        elif not value:
            sink.error("structure", MsgId.EMPTY_OBJECT, f"'{key}' must not be an empty object", render(loc))
        else:
            # Extensions of a primitive have the primitive's element as their host (extension contexts).
            ctx.host = (p.elem.path, p.type_code)
            before = len(ctx.references)
            try:
                self._walk(value, compiled(shape, ctx.collect_invariants), loc, ctx)
            finally:
                ctx.host = None
                ctx.companion_references += len(ctx.references) - before

    def _extension_shape(self, ext: dict[str, Any], loc: Loc, sink: IssueSink) -> None:
        url = ext.get("url")
        if url is None:
            sink.error("required", MsgId.EXTENSION_URL_MISSING, "An extension must have a url", render(loc))
        has_value = False
        for k in ext:
            if k.startswith("value") or k.startswith("_value"):
                has_value = True
                break
        has_children = "extension" in ext
        if has_value and has_children:
            sink.error("invariant", MsgId.EXTENSION_VALUE_AND_CHILDREN,
                       "ext-1: an extension must have either extensions or value[x], not both", render(loc))
        elif not has_value and not has_children:
            sink.error("invariant", MsgId.EXTENSION_EMPTY,
                       "ext-1: an extension must have either extensions or value[x]", render(loc))
