"""FHIRPath Patch: https://hl7.org/fhir/R4/fhirpatch.html

A ``Parameters`` resource whose ``operation`` parameters change a resource in order: ``add`` (an
element ``name`` with ``value`` under the one element ``path`` selects), ``insert`` (``value`` into the
list ``path`` names, at ``index``), ``delete`` (the one element ``path`` selects; nothing selected is no
change), ``replace`` (the one element ``path`` selects, by ``value``) and ``move`` (within the list
``path`` names, from ``source`` to ``destination``). A value is a ``value[x]`` (its type is the
suffix), a ``resource``, or, for anonymous and other complex types, ``part``s named after its elements.

Paths are evaluated by the server's FHIRPath engine (:mod:`fhir_exchange.fhir.fhirpath`). The engine's
nodes carry their place in the resource (``Patient.name[0].given[1]``); this module walks the JSON
along that place, with the element shapes of the core definitions (:mod:`fhir_exchange.validation.shapes`)
telling which JSON key an element has (choice types), whether it repeats and which type it takes, so a
value of the wrong type is refused here, naming the operation, rather than later by the validator. The
id and extensions of a primitive live in its ``_name`` object: paths below a primitive
(``Patient.birthDate.extension``) and ``add`` to one go there, and arrays of primitives keep their
``_name`` arrays aligned. (fhirpathpy does not navigate below an indexed primitive,
``given[1].extension``; ``given.extension`` works.) A
path that selects nothing where one element is needed, several, something that is not an element of
the resource being patched (``resolve()`` of another resource), an index out of range, a missing or
unknown part: 422 with an OperationOutcome naming ``Parameters.parameter[i]``, the type and the path.
The patched resource is then validated like an update by the caller (:mod:`patch`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from fhirpathpy.engine.nodes import ResourceNode

from fhir_exchange.definitions import Definitions
from fhir_exchange.errors import Category, FhirError
from fhir_exchange.fhir import fhirpath
from fhir_exchange.validation.shapes import COMPLEX, PRIM, RESOURCE, Prop, Shape, ShapeBuilder

TYPES = ("add", "insert", "delete", "replace", "move")
# The parts each operation type requires (fhirpatch.html, the table of operations).
_REQUIRED = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_PARTS = frozenset({"type", "path", "name", "value", "index", "source", "destination"})
_STEP = re.compile(r"^(?P<name>[A-Za-z$][A-Za-z0-9]*)(?:\[(?P<index>\d+)\])?$")
# The last member step of a collection path: "Patient.name[0].given" -> ("Patient.name[0]", "given").
_LAST_MEMBER = re.compile(r"^(?:(?P<parent>.*)\.)?`?(?P<name>[A-Za-z][A-Za-z0-9]*)`?$", re.S)
# JSON kinds of primitive values: a value of another kind never fits (a boolean for a date).
_JSON_KIND = {"boolean": bool, "integer": int, "unsignedInt": int, "positiveInt": int, "decimal": float}


def shapes_of(defs: Definitions) -> ShapeBuilder:
    """The element shapes of the loaded definitions, kept with them (rebuilt when they change)."""
    return defs.derived("fhirpath-patch.shapes", lambda: ShapeBuilder(defs))


def is_fhirpath_patch(body: Any) -> bool:
    return isinstance(body, dict) and body.get("resourceType") == "Parameters"


@dataclass(slots=True)
class _Place:
    """Where one element lives: ``obj[key]`` (``obj[key][index]`` in an array), ``prop`` its definition."""

    obj: dict[str, Any]
    key: str
    index: int | None
    prop: Prop
    # A primitive whose ``_key`` object (its id and extensions) the chain goes on into.
    companion: bool = False

    @property
    def value(self) -> Any:
        return _value_at(self.obj, "_" + self.key if self.companion else self.key, self.index)


@dataclass(slots=True)
class _Value:
    json: Any  # the JSON of the value
    type: str | None  # its FHIR type (``HumanName``, ``date``); None when built from parts
    companion: Any = None  # the ``_value[x]`` object of a primitive (id, extensions)


class _OpError(Exception):
    pass


def apply(defs: Definitions, resource: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``resource`` (not changed) with the operations of ``params`` applied in order."""
    shapes = shapes_of(defs)
    out = copy.deepcopy(resource)
    parameters = params.get("parameter", [])
    if not isinstance(parameters, list):
        raise FhirError(Category.INVALID, "Parameters.parameter must be an array", ("Parameters.parameter",),
                        code="structure")
    for i, p in enumerate(parameters):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or p.get("name") != "operation":
            raise FhirError(Category.UNPROCESSABLE, f"FHIRPath Patch {where} is not named 'operation'",
                            (where,), code="invalid")
        parts = _parts(p, where)
        kind = parts.get("type", {}).get("valueCode")
        path = parts.get("path", {}).get("valueString")
        label = f"FHIRPath Patch operation {where} ({kind}{'' if path is None else f', path {path!r}'})"
        try:
            if kind not in TYPES:
                raise _OpError(f"unknown operation type {kind!r}: use one of {', '.join(TYPES)}")
            missing = [n for n in _REQUIRED[kind] if n not in parts]
            if missing:
                raise _OpError(f"missing part(s) {', '.join(repr(m) for m in missing)}")
            if not isinstance(path, str) or not path.strip():
                raise _OpError("the path part needs a valueString")
            _Operation(shapes, out, kind, path.strip(), parts).run()
        except _OpError as exc:
            raise FhirError(Category.UNPROCESSABLE, f"{label}: {exc}", (where,), code="processing") from None
    return out


def _parts(p: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {}
    given = p.get("part") or []
    if not isinstance(given, list):
        raise FhirError(Category.UNPROCESSABLE, f"FHIRPath Patch {where}.part must be an array", (where,),
                        code="invalid")
    for j, part in enumerate(given):
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name not in _PARTS or name in parts:
            why = "repeated" if isinstance(name, str) and name in parts else "unknown"
            raise FhirError(Category.UNPROCESSABLE, f"FHIRPath Patch {where}: {why} part {name!r}",
                            (f"{where}.part[{j}]",), code="invalid")
        parts[name] = part
    return parts


class _Operation:
    def __init__(self, shapes: ShapeBuilder, resource: dict[str, Any], kind: str, path: str,
                 parts: dict[str, dict[str, Any]]) -> None:
        self.shapes = shapes
        self.resource = resource
        self.kind = kind
        self.path = path
        self.parts = parts

    def run(self) -> None:
        getattr(self, "_" + self.kind)()

    # -- the operations ---------------------------------------------------------------------------

    def _add(self) -> None:
        obj, shape = self._one_object(self.path)
        name = self._string("name")
        prop = self._prop(shape, name, self.parts["value"])
        value = self._value(self.parts["value"], prop)
        if prop.is_array:
            self._insert_at(obj, prop.key, len(obj.get(prop.key) or ()), value)
            return
        if any(_same_element(k, name, shape) for k in obj):
            raise _OpError(f"the element already has {name!r} (it does not repeat: use replace)")
        obj[prop.key] = value.json
        if value.companion is not None:
            obj["_" + prop.key] = value.companion

    def _insert(self) -> None:
        obj, prop = self._collection()
        items = obj.get(prop.key) or []
        index = self._integer("index", 0, len(items))
        self._insert_at(obj, prop.key, index, self._value(self.parts["value"], prop))

    def _delete(self) -> None:
        chain = self._select(self.path, allow_none=True)
        if chain is None:
            return  # "delete: the path of the element to delete (if found)"
        _remove(chain)

    def _replace(self) -> None:
        chain = self._select(self.path, allow_none=False)
        assert chain is not None
        place = chain[-1]
        prop = place.prop
        if prop.choice:
            # Another type of a choice element changes its JSON key: valueString -> valueQuantity.
            value = self._value(self.parts["value"], self._prop(self._shape_of(chain), prop.elem.name,
                                                                  self.parts["value"]))
            key = _choice_key(prop.elem.name, value.type) if value.type else place.key
            place.obj.pop(place.key)
            place.obj.pop("_" + place.key, None)
            place.obj[key] = value.json
            if value.companion is not None:
                place.obj["_" + key] = value.companion
            return
        value = self._value(self.parts["value"], prop)
        if place.index is None:
            place.obj[place.key] = value.json
            place.obj.pop("_" + place.key, None)
            if value.companion is not None:
                place.obj["_" + place.key] = value.companion
            return
        place.obj[place.key][place.index] = value.json
        _set_companion(place.obj, place.key, place.index, value.companion, len(place.obj[place.key]))

    def _move(self) -> None:
        obj, prop = self._collection()
        items = obj.get(prop.key)
        if not isinstance(items, list) or not items:
            raise _OpError("the list is empty: nothing to move")
        source = self._integer("source", 0, len(items) - 1)
        destination = self._integer("destination", 0, len(items) - 1)
        for key in (prop.key, "_" + prop.key):
            seq = obj.get(key)
            if isinstance(seq, list) and len(seq) == len(items):
                seq.insert(destination, seq.pop(source))

    # -- selecting --------------------------------------------------------------------------------

    def _evaluate(self, expression: str) -> list[Any]:
        try:
            compiled = fhirpath.compile(expression)
            # The engine's own nodes (not plain values): they carry where in the resource they are.
            return compiled._run(self.resource, None, None, None, None, None, None, None, None, None)
        except fhirpath.FhirPathError as exc:
            raise _OpError(f"the FHIRPath expression {expression!r} cannot be evaluated: {exc}") from None

    def _select(self, expression: str, *, allow_none: bool, allow_root: bool = False) -> list[_Place] | None:
        """The chain of places from the root to the one element ``expression`` selects."""
        nodes = self._evaluate(expression)
        if not nodes:
            if allow_none:
                return None
            raise _OpError("the path selects nothing; it must select exactly one element")
        if len(nodes) > 1:
            raise _OpError(f"the path selects {len(nodes)} elements; it must select exactly one")
        chain = self._locate(nodes[0])
        if not chain and not allow_root:
            raise _OpError("the path selects the resource itself, not one of its elements")
        return chain

    def _one_object(self, expression: str) -> tuple[dict[str, Any], Shape]:
        """The one object (the resource or a complex element) ``expression`` selects, with its shape."""
        if not expression or expression == self.resource.get("resourceType"):
            return self.resource, self._resource_shape(self.resource)
        chain = self._select(expression, allow_none=False, allow_root=True)
        if not chain:
            return self.resource, self._resource_shape(self.resource)
        place = chain[-1]
        if place.prop.kind == PRIM:  # content of a primitive value goes into its ``_key`` object
            comp = _value_at(place.obj, "_" + place.key, place.index)
            if not isinstance(comp, dict):
                comp = {}
                if place.index is None:
                    place.obj["_" + place.key] = comp
                else:
                    length = len(place.obj.get(place.key) or place.obj.get("_" + place.key) or ())
                    _set_companion(place.obj, place.key, place.index, comp, length)
            return comp, self._element_shape()
        value = place.value
        if not isinstance(value, dict):
            raise _OpError("the path does not select an element content can be added to")
        return value, self._content_shape(place.prop, value)

    def _collection(self) -> tuple[dict[str, Any], Prop]:
        """The object holding the list ``path`` names, and the list's element definition."""
        m = _LAST_MEMBER.match(self.path)
        if m is None:
            raise _OpError("the path must name a list: it must end with an element name (Patient.identifier)")
        parent = (m["parent"] or "").strip()
        obj, shape = self._one_object(parent)
        prop = shape.props.get(m["name"])
        if prop is None:
            raise _OpError(f"{shape.name} has no element {m['name']!r}")
        if not prop.is_array:
            raise _OpError(f"{shape.name}.{m['name']} is not a list (it does not repeat)")
        return obj, prop

    def _locate(self, node: Any) -> list[_Place]:
        """The places from the root to ``node``: its ``propName`` (``Patient.name[0].given[1]``)
        walked in the JSON, then checked to be the very node the engine found. Below ``resolve()`` of
        a contained resource the name starts at that resource, so its ``contained`` entries are tried too."""
        name = node.propName if isinstance(node, ResourceNode) else None
        data = node.data if isinstance(node, ResourceNode) else node
        if data is self.resource:
            return []
        contained = self.resource.get("contained")
        if name is None:  # a contained resource itself, as resolve() gives it
            for i, c in enumerate(contained if isinstance(contained, list) else ()):
                if c is data:
                    return [_Place(self.resource, "contained", i, self._contained_prop())]
            raise _OpError("the path selects something that is not an element of the resource being patched")
        first, *rest = name.split(".")
        steps = [_STEP.match(s) for s in rest]
        own = first in (self.resource.get("resourceType"), "$")
        chain = self._walk(self.resource, [], steps, data) if own else None
        for i, c in enumerate(contained if isinstance(contained, list) else ()):
            if chain is not None:
                break
            if isinstance(c, dict) and first in (c.get("resourceType"), "$"):
                head = _Place(self.resource, "contained", i, self._contained_prop())
                chain = self._walk(c, [head], steps, data)
        if chain is None:
            raise _OpError("the path selects something that is not an element of the resource being patched")
        return chain

    def _walk(self, root: dict[str, Any], chain: list[_Place], steps: list[re.Match[str] | None],
              data: Any) -> list[_Place] | None:
        obj: Any = root
        shape = self._resource_shape(root)
        chain = list(chain)
        for step in steps:
            if chain and chain[-1].prop.kind == PRIM:  # below a primitive: its id and extensions
                chain[-1] = dataclasses.replace(chain[-1], companion=True)
                obj, shape = chain[-1].value, self._element_shape()
            if step is None or not isinstance(obj, dict):
                return None
            key, prop = self._key(obj, shape, step["name"])
            if prop is None:
                return None
            index = int(step["index"]) if step["index"] is not None else None
            current = obj.get(key)
            companions = obj.get("_" + key)
            if (index is not None and (not isinstance(current, list) or index >= len(current))
                    and not (isinstance(companions, list) and index < len(companions))):
                return None
            chain.append(_Place(obj, key, index, prop))
            obj = _value_at(obj, key, index)
            if prop.kind != PRIM and isinstance(obj, dict):
                shape = self._content_shape(prop, obj)
        if not chain:
            return None
        found = _value_at(chain[-1].obj, chain[-1].key, chain[-1].index)
        companion = _value_at(chain[-1].obj, "_" + chain[-1].key, chain[-1].index)
        same = found is data or (not isinstance(data, dict | list) and found == data)
        return chain if same or (found is None and companion is data) else None

    def _element_shape(self) -> Shape:
        shape = self.shapes.type_shape("Element")
        if shape is None:
            raise _OpError("the definitions have no Element type")
        return shape

    def _contained_prop(self) -> Prop:
        prop = self._resource_shape(self.resource).props.get("contained")
        if prop is None:
            raise _OpError(f"{self.resource.get('resourceType')} has no contained resources")
        return prop

    def _key(self, obj: dict[str, Any], shape: Shape, name: str) -> tuple[str, Prop | None]:
        prop = shape.props.get(name)
        if prop is not None and not prop.choice:
            return name, prop
        for key in obj:  # a choice element: valueQuantity for "value"
            p = shape.props.get(key)
            if p is not None and p.choice and p.elem.name == name:
                return key, p
        return name, None

    # -- shapes and values ------------------------------------------------------------------------

    def _resource_shape(self, resource: dict[str, Any]) -> Shape:
        shape = self.shapes.resource_shape(str(resource.get("resourceType")))
        if shape is None:
            raise _OpError(f"unknown resource type {resource.get('resourceType')!r}")
        return shape

    def _content_shape(self, prop: Prop, value: dict[str, Any]) -> Shape:
        if prop.kind == RESOURCE:
            return self._resource_shape(value)
        return self.shapes.resolve(prop)

    def _shape_of(self, chain: list[_Place]) -> Shape:
        """The shape of the object holding the last place of ``chain``."""
        if len(chain) == 1:
            return self._resource_shape(self.resource)
        holder = chain[-2]
        return self._element_shape() if holder.companion else self._content_shape(holder.prop, holder.value)

    def _prop(self, shape: Shape, name: str, part: dict[str, Any]) -> Prop:
        """The definition of element ``name`` of ``shape`` for the value ``part`` carries."""
        prop = shape.props.get(name)
        if prop is not None and not prop.choice:
            return prop
        choices = [p for p in shape.props.values() if p.choice and p.elem.name == name]
        if not choices:
            raise _OpError(f"{shape.name} has no element {name!r}")
        vtype = _declared_type(self.shapes, part)
        for p in choices:
            if vtype is not None and p.type_code == vtype:
                return p
        allowed = ", ".join(sorted(p.type_code for p in choices))
        raise _OpError(f"{shape.name}.{name}[x] takes a value of type {allowed}, not {vtype or 'parts'}")

    def _value(self, part: dict[str, Any], prop: Prop) -> _Value:
        """The JSON of the value ``part`` gives for an element defined by ``prop`` (checked to fit)."""
        value = _given_value(self.shapes, part)
        where = f"{prop.host}.{prop.elem.name}"
        if value is None:
            sub = part.get("part")
            if not isinstance(sub, list) or not sub:
                raise _OpError("the value part has neither a value[x], a resource nor parts")
            if prop.kind != COMPLEX:
                raise _OpError(f"{where} is a {prop.type_code}: give it as value[x], not as parts")
            return _Value(self._from_parts(sub, self.shapes.resolve(prop)), None)
        vtype = value.type
        if prop.kind == RESOURCE:
            if not (isinstance(value.json, dict) and "resourceType" in value.json):
                raise _OpError(f"{where} takes a resource, not a {vtype}")
            return value
        if prop.kind == PRIM:
            primitive = vtype is not None and self.shapes.kind(vtype) == "primitive-type"
            if vtype is None or not primitive or not _same_json_kind(vtype, prop.type_code):
                raise _OpError(f"{where} takes a {prop.type_code}, not a {vtype}")
            return value
        anonymous = bool(prop.elem.children) or prop.elem.content_ref is not None
        if anonymous or vtype != prop.type_code:
            wanted = "parts (it is an anonymous element)" if anonymous else f"a {prop.type_code}"
            raise _OpError(f"{where} takes {wanted}, not a {vtype}")
        return value

    def _from_parts(self, parts: list[Any], shape: Shape) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for part in parts:
            name = part.get("name") if isinstance(part, dict) else None
            if not isinstance(name, str):
                raise _OpError("a part of the value has no name")
            prop = self._prop(shape, name, part)
            value = self._value(part, prop)
            if prop.is_array:
                n = len(obj.get(prop.key) or ())
                obj.setdefault(prop.key, []).append(value.json)
                _set_companion(obj, prop.key, n, value.companion, n + 1)
            elif prop.key in obj:
                raise _OpError(f"the value gives {name!r} twice but it does not repeat")
            else:
                obj[prop.key] = value.json
                if value.companion is not None:
                    obj["_" + prop.key] = value.companion
        return obj

    def _insert_at(self, obj: dict[str, Any], key: str, index: int, value: _Value) -> None:
        items = obj.setdefault(key, [])
        if not isinstance(items, list):
            raise _OpError(f"{key!r} holds a single value, not a list")
        items.insert(index, value.json)
        companions = obj.get("_" + key)
        if isinstance(companions, list):
            companions.insert(index, None)
        _set_companion(obj, key, index, value.companion, len(items))

    def _string(self, name: str) -> str:
        v = self.parts[name].get("valueString")
        if not isinstance(v, str) or not v:
            raise _OpError(f"the {name} part needs a valueString")
        return v

    def _integer(self, name: str, low: int, high: int) -> int:
        v = self.parts[name].get("valueInteger")
        if not isinstance(v, int) or isinstance(v, bool):
            raise _OpError(f"the {name} part needs a valueInteger")
        if not low <= v <= high:
            raise _OpError(f"{name} {v} is out of range: it must be between {low} and {high}")
        return v


# -- helpers ------------------------------------------------------------------------------------


def _declared_type(shapes: ShapeBuilder, part: dict[str, Any]) -> str | None:
    for key in part:
        if key.startswith("value") and len(key) > 5:
            suffix = key[5:]
            lower = suffix[0].lower() + suffix[1:]
            return lower if shapes.kind(lower) == "primitive-type" else suffix
    resource = part.get("resource")
    if isinstance(resource, dict):
        return str(resource.get("resourceType"))
    return None


def _given_value(shapes: ShapeBuilder, part: dict[str, Any]) -> _Value | None:
    keys = [k for k in part if k.startswith("value") and len(k) > 5]
    if len(keys) > 1:
        raise _OpError(f"the value part has several values: {', '.join(keys)}")
    if keys:
        return _Value(copy.deepcopy(part[keys[0]]), _declared_type(shapes, part),
                      copy.deepcopy(part.get("_" + keys[0])))
    if isinstance(part.get("resource"), dict):
        return _Value(copy.deepcopy(part["resource"]), str(part["resource"].get("resourceType")))
    return None


def _same_json_kind(value_type: str, target_type: str) -> bool:
    """Whether a primitive of ``value_type`` can stand where ``target_type`` is expected: the same
    JSON kind (text, integer, decimal, boolean); the format is checked by the validation that follows."""
    v, t = _JSON_KIND.get(value_type, str), _JSON_KIND.get(target_type, str)
    return v is t or (t is float and v is int)


def _choice_key(name: str, type_code: str) -> str:
    return name + type_code[0].upper() + type_code[1:]


def _same_element(key: str, name: str, shape: Shape) -> bool:
    prop = shape.props.get(key.lstrip("_"))
    return key.lstrip("_") == name or (prop is not None and prop.choice and prop.elem.name == name)


def _value_at(obj: dict[str, Any], key: str, index: int | None) -> Any:
    v = obj.get(key)
    if index is None:
        return v
    return v[index] if isinstance(v, list) and index < len(v) else None


def _set_companion(obj: dict[str, Any], key: str, index: int, companion: Any, length: int) -> None:
    """Keep ``_key`` (ids and extensions of primitives) aligned with the array ``key``."""
    ckey = "_" + key
    current = obj.get(ckey)
    if companion is None and not isinstance(current, list):
        return
    seq = current if isinstance(current, list) else []
    seq.extend([None] * (length - len(seq)))
    seq[index] = companion
    if any(c is not None for c in seq):
        obj[ckey] = seq
    else:
        obj.pop(ckey, None)


def _remove(chain: list[_Place]) -> None:
    """Delete the last place of ``chain``; objects and arrays left empty go too (no empty elements)."""
    for n, place in enumerate(reversed(chain)):
        obj, key, index = place.obj, place.key, place.index
        if n and place.companion:
            # The object left empty was this primitive's ``_key``: it goes, the value stays if there is one.
            if index is None:
                obj.pop("_" + key, None)
            else:
                _set_companion(obj, key, index, None, 0)
            if _value_at(obj, key, index) is not None:
                return
        if index is None:
            obj.pop(key, None)
            obj.pop("_" + key, None)
        else:
            for k in (key, "_" + key):
                seq = obj.get(k)
                if isinstance(seq, list) and index < len(seq):
                    seq.pop(index)
                    if not seq or all(x is None for x in seq):
                        obj.pop(k)
        if obj or place is chain[0]:
            return
