"""Structural validation of JSON resources: https://hl7.org/fhir/R4/json.html and https://hl7.org/fhir/R4/validation.html#structure.

One pass over the parsed JSON against the shapes of the core definitions checks what the JSON
representation itself requires: known properties only, arrays exactly where the base cardinality
is more than one (and never empty), no empty objects, ``null`` only as a placeholder aligned with a
``_name`` companion array, primitive JSON types and lexical forms, one choice variant at a time,
minimum cardinalities, ``resourceType`` on every resource (contained ones, Bundle entries,
Parameters values — each checked as a resource of its own type), extension shape (url, and a value
or nested extensions, never both), and bindings through the local terminology.

Expressions name the exact element (``Patient.name[0].given[1]``, ``Observation.value.ofType(Quantity)``).
The walker is written for speed: no intermediate objects, paths built only as the walk descends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_exchange.validation.bindings import check_binding
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.primitives import json_type_name
from fhir_exchange.validation.shapes import PRIM, RESOURCE, Prop, Shape, ShapeBuilder
from fhir_exchange.validation.terminology import Terminology

GOOD_CACHE_SIZE = 2048


def coding_key(value: dict[str, Any], type_code: str) -> tuple[Any, ...] | None:
    """(system, code) pairs of a coded value, or None when it is malformed (the walk reports it)."""
    if type_code == "CodeableConcept":
        codings = value.get("coding")
        if type(codings) is not list:
            return None
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


@dataclass(slots=True)
class Visited:
    """A node met during the walk that a later pass needs: no pass walks the JSON again."""

    node: Any
    path: str
    resource: dict[str, Any]  # the resource the node belongs to (contained ones are their own)
    resource_path: str
    type_code: str  # FHIR type (or element path for backbone elements)
    elem_path: str  # the defining element's path, e.g. "Patient.birthDate" for an extension's host
    extra: Any = None


@dataclass(slots=True)
class WalkContext:
    sink: IssueSink
    resources: list[Visited] = field(default_factory=list)  # every resource, container after contained
    extensions: list[Visited] = field(default_factory=list)  # extra: True for modifierExtension
    references: list[Visited] = field(default_factory=list)  # extra: the Prop
    invariants: list[Visited] = field(default_factory=list)  # extra: tuple of Constraints
    attachments: list[Visited] = field(default_factory=list)
    # extensions: extra is (is_modifier, host type); elem_path is the host element's path
    resource: dict[str, Any] | None = None
    resource_path: str = ""
    # (element path, type) hosting the extensions being walked, when not the shape's own element
    host: tuple[str, str] | None = None


class StructureWalker:
    def __init__(self, shapes: ShapeBuilder, terminology: Terminology, *, check_bindings: bool = True) -> None:
        self.shapes = shapes
        self.tx = terminology
        self.check_bindings = check_bindings
        self._element_shape: Shape | None = None

    def _companion_shape(self) -> Shape:
        # ``_name`` objects carry what Element carries: id and extension.
        if self._element_shape is None:
            self._element_shape = self.shapes.type_shape("Element") or Shape("Element", {})
        return self._element_shape

    def validate_resource(self, res: Any, path: str, ctx: WalkContext, *,
                          expected_type: str | None = None) -> str | None:
        """Validate a resource; returns its type when it could be determined."""
        sink = ctx.sink
        if type(res) is not dict:
            sink.error("structure", MsgId.NOT_OBJECT,
                       f"A resource must be a JSON object, not {json_type_name(res)}", path or None)
            return None
        rt = res.get("resourceType")
        if rt is None:
            sink.error("structure", MsgId.RESOURCE_TYPE_MISSING, "The resource has no resourceType property",
                       path or None)
            return None
        if type(rt) is not str:
            sink.error("structure", MsgId.RESOURCE_TYPE_UNKNOWN, "resourceType must be a string", path or None)
            return None
        shape = self.shapes.resource_shape(rt)
        if shape is None or (schema := self.shapes.schema(rt)) is None or schema.abstract:
            sink.error("structure", MsgId.RESOURCE_TYPE_UNKNOWN, f"Unknown resource type '{rt}'", path or None)
            return None
        if expected_type is not None and rt != expected_type:
            sink.error("invalid", MsgId.RESOURCE_TYPE_MISMATCH,
                       f"Expected a {expected_type} resource, got {rt}", path or rt)
        here = path or rt
        outer, outer_path = ctx.resource, ctx.resource_path
        ctx.resource, ctx.resource_path = res, here
        try:
            self._walk_object(res, shape, here, ctx)
            if shape.constraints:
                ctx.invariants.append(Visited(res, here, res, here, rt, rt, shape.constraints))
        finally:
            ctx.resource, ctx.resource_path = outer, outer_path
        ctx.resources.append(Visited(res, here, res, here, rt, rt, outer))
        return rt

    def _walk_object(self, obj: dict[str, Any], shape: Shape, path: str, ctx: WalkContext) -> None:
        # The hot loop of validation: paths are only built where an issue or a descent needs them.
        sink = ctx.sink
        props = shape.props
        choices: set[int] | None = None
        for key, value in obj.items():
            p = props.get(key)
            if p is None:
                if key[:1] == "_":
                    base = props.get(key[1:])
                    if base is not None and base.kind == PRIM:
                        self._companion(obj, key, value, base, path, ctx)
                        continue
                elif key == "resourceType" and shape.resource_type is not None:
                    continue
                sink.error("structure", MsgId.UNKNOWN_ELEMENT,
                           f"Unrecognised property '{key}' in {shape.name}", f"{path}.{key}")
                continue
            if p.choice:
                if choices is None:
                    choices = set()
                eid = id(p.elem)
                if eid in choices:
                    sink.error("structure", MsgId.CHOICE_MULTIPLE,
                               f"Only one of the {p.elem.name}[x] variants may be present", f"{path}.{key}")
                choices.add(eid)
            if p.is_array:
                if value.__class__ is not list:
                    sink.error("structure", MsgId.ARRAY_EXPECTED,
                               f"'{key}' must be a JSON array (its cardinality is more than one)",
                               path + "." + p.segment)
                    continue
                if not value:
                    sink.error("structure", MsgId.EMPTY_ARRAY, f"'{key}' must not be an empty array",
                               path + "." + p.segment)
                    continue
                if p.kind == PRIM:
                    good = p.good
                    for i, item in enumerate(value):
                        if item.__class__ is str and item in good:
                            continue
                        if item is None:
                            companion = obj.get("_" + key)
                            if not (type(companion) is list and i < len(companion) and companion[i] is not None):
                                sink.error("structure", MsgId.NULL_VALUE,
                                           "null is only allowed in an array of primitives where the "
                                           f"_{key} array holds the element's id or extensions",
                                           f"{path}.{p.segment}[{i}]")
                            continue
                        self._primitive(item, p, path, i, sink)
                else:
                    here = path + "." + p.segment
                    for i, item in enumerate(value):
                        self._complex(item, p, f"{here}[{i}]", ctx)
            elif p.kind == PRIM:
                if value.__class__ is str and value in p.good:
                    continue
                if value is None:
                    sink.error("structure", MsgId.NULL_VALUE, f"'{key}' must not be null", path + "." + p.segment)
                elif value.__class__ is list:
                    sink.error("structure", MsgId.ARRAY_UNEXPECTED,
                               f"'{key}' must not be an array (its cardinality is at most one)",
                               path + "." + p.segment)
                else:
                    self._primitive(value, p, path, -1, sink)
            elif value.__class__ is list:
                sink.error("structure", MsgId.ARRAY_UNEXPECTED,
                           f"'{key}' must not be an array (its cardinality is at most one)", path + "." + p.segment)
            else:
                self._complex(value, p, path + "." + p.segment, ctx)
        for name, keys, minimum in shape.required:
            for k in keys:
                if k in obj:
                    break
            else:
                # The expression names the missing element under its parent (Patient.link[0].other):
                # empty in the instance, but it tells a client exactly which field to fill.
                sink.error("required", MsgId.CARDINALITY_MIN,
                           f"{shape.name}.{name}: minimum required = {minimum}, but only found 0", f"{path}.{name}")

    def _primitive(self, value: Any, p: Prop, parent: str, index: int, sink: IssueSink) -> None:
        prim = p.prim
        assert prim is not None
        failure = prim.check(value)
        if failure is None and p.binding is None:
            if value.__class__ is str and len(p.good) < GOOD_CACHE_SIZE:
                p.good.add(value)
            return
        path = f"{parent}.{p.segment}" if index < 0 else f"{parent}.{p.segment}[{index}]"
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
            mark = sink.mark()
            check_binding(self.tx, p.binding, p.type_code, value, path, sink)
            if sink.mark() != mark:
                return
        if value.__class__ is str and len(p.good) < GOOD_CACHE_SIZE:
            p.good.add(value)

    def _complex(self, value: Any, p: Prop, path: str, ctx: WalkContext) -> None:
        if p.kind == RESOURCE:
            self.validate_resource(value, path, ctx)
            return
        sink = ctx.sink
        if type(value) is not dict:
            sink.error("structure", MsgId.OBJECT_EXPECTED,
                       f"'{p.key}' must be a JSON object ({p.type_code}), not {json_type_name(value)}", path)
            return
        if not value:
            sink.error("structure", MsgId.EMPTY_OBJECT, f"'{p.key}' must not be an empty object", path)
            return
        shape = p.shape or self.shapes.resolve(p)
        res = ctx.resource
        assert res is not None
        if shape.is_extension:
            outer_host = ctx.host
            host = outer_host or (p.host, p.host_type)
            ctx.host = None
            try:
                self._walk_object(value, shape, path, ctx)
            finally:
                ctx.host = outer_host
            self._extension_shape(value, path, sink)
            ctx.extensions.append(Visited(value, path, res, ctx.resource_path, "Extension", host[0],
                                          (p.key == "modifierExtension", host[1])))
        else:
            self._walk_object(value, shape, path, ctx)
        if p.type_code == "Reference":
            ctx.references.append(Visited(value, path, res, ctx.resource_path, "Reference", p.elem.path, p))
        elif p.type_code == "Attachment":
            ctx.attachments.append(Visited(value, path, res, ctx.resource_path, "Attachment", p.elem.path))
        if shape.constraints:
            # shape.name, not the element's path: a contentReference element (Parameters.parameter.part)
            # has the type of the element it refers to (Parameters.parameter).
            ctx.invariants.append(Visited(value, path, res, ctx.resource_path, p.type_code, shape.name,
                                          shape.constraints))
        if p.binding is not None and self.check_bindings:
            # Codings repeat across resources: a clean (system, code) set is remembered per element.
            key = coding_key(value, p.type_code)
            if key is not None and key in p.good_codes:
                return
            mark = sink.mark()
            check_binding(self.tx, p.binding, p.type_code, value, path, sink)
            if key is not None and sink.mark() == mark and len(p.good_codes) < GOOD_CACHE_SIZE:
                p.good_codes.add(key)

    def _companion(self, obj: dict[str, Any], key: str, value: Any, p: Prop, path: str, ctx: WalkContext) -> None:
        """``_name``: the id and extensions of a primitive (json.html#primitive)."""
        sink = ctx.sink
        here = path + "." + p.segment
        shape = self._companion_shape()
        name = key[1:]
        if p.is_array:
            if type(value) is not list:
                sink.error("structure", MsgId.ARRAY_EXPECTED, f"'{key}' must be a JSON array", here)
                return
            values = obj.get(name)
            if values is not None and (type(values) is not list or len(values) != len(value)):
                sink.error("structure", MsgId.COMPANION_MISALIGNED,
                           f"'{key}' must have as many entries as '{name}'", here)
            if not value:
                sink.error("structure", MsgId.EMPTY_ARRAY, f"'{key}' must not be an empty array", here)
            for i, item in enumerate(value):
                if item is None:
                    has_value = type(values) is list and i < len(values) and values[i] is not None
                    if not has_value:
                        sink.error("structure", MsgId.NULL_VALUE,
                                   f"'{key}[{i}]' and '{name}[{i}]' must not both be null", f"{here}[{i}]")
                    continue
                self._element(item, key, shape, f"{here}[{i}]", p, ctx)
        else:
            if type(value) is list:
                sink.error("structure", MsgId.ARRAY_UNEXPECTED, f"'{key}' must not be an array", here)
                return
            self._element(value, key, shape, here, p, ctx)

    def _element(self, value: Any, key: str, shape: Shape, path: str, p: Prop, ctx: WalkContext) -> None:
        sink = ctx.sink
        if type(value) is not dict:
            sink.error("structure", MsgId.OBJECT_EXPECTED, f"'{key}' entries must be JSON objects", path)
        elif not value:
            sink.error("structure", MsgId.EMPTY_OBJECT, f"'{key}' must not be an empty object", path)
        else:
            # Extensions of a primitive have the primitive's element as their host (extension contexts).
            ctx.host = (p.elem.path, p.type_code)
            try:
                self._walk_object(value, shape, path, ctx)
            finally:
                ctx.host = None

    def _extension_shape(self, ext: dict[str, Any], path: str, sink: IssueSink) -> None:
        url = ext.get("url")
        if url is None:
            sink.error("required", MsgId.EXTENSION_URL_MISSING, "An extension must have a url", path)
        has_value = False
        for k in ext:
            if k.startswith("value") or k.startswith("_value"):
                has_value = True
                break
        has_children = "extension" in ext
        if has_value and has_children:
            sink.error("invariant", MsgId.EXTENSION_VALUE_AND_CHILDREN,
                       "ext-1: an extension must have either extensions or value[x], not both", path)
        elif not has_value and not has_children:
            sink.error("invariant", MsgId.EXTENSION_EMPTY,
                       "ext-1: an extension must have either extensions or value[x]", path)
