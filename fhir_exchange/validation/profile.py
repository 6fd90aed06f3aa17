"""Validation against profiles: https://hl7.org/fhir/R4/profiling.html and https://hl7.org/fhir/R4/validation.html#profile.

The structural pass (:mod:`structure`) has already checked everything the core definitions say.
This walker follows a profile's element tree over the instance and checks what profiles add:
cardinality narrowed (min/max, including max 0), types narrowed, ``fixed[x]`` and ``pattern[x]``,
``minValue[x]``/``maxValue[x]``/``maxLength``, bindings, slicing (discriminators value, pattern,
exists, type, profile; rules open/closed/openAtEnd; ordered), type profiles (datatype, extension and
resource profiles on an element, ``targetProfile`` of references that resolve in the Bundle or in
``contained``), and the profile's own invariants.

Where a profile leaves an element unconstrained (no children in its snapshot), the walk stops: the
structural pass covered it. Slices are matched silently (issues of a failed candidate are dropped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.bindings import check_binding
from fhir_exchange.validation.invariants import InvariantChecker
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.schema import Binding, ElementDef, StructureSchema, compile_structure
from fhir_exchange.validation.shapes import BINDABLE, NATIVE_CONSTRAINTS, ShapeBuilder
from fhir_exchange.validation.snapshot import SnapshotError, SnapshotGenerator
from fhir_exchange.validation.structure import coding_key
from fhir_exchange.validation.terminology import Terminology
from fhir_exchange.validation.values import compare, describe, duration_limit, json_equal, matches_pattern

CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
MAX_DEPTH = 12  # profiles of references of profiles...: deep enough for real IGs, bounded against cycles

Resolver = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass(slots=True)
class Item:
    value: Any  # None for a primitive that has only extensions
    companion: Any
    key: str
    type_code: str
    path: str


@dataclass(slots=True)
class ProfileContext:
    sink: IssueSink
    resource: dict[str, Any]
    resolve: Resolver  # reference string, from-resource -> target resource
    root_of: Callable[[dict[str, Any]], dict[str, Any]]  # %rootResource of a resource
    depth: int = 0
    in_progress: set[tuple[int, str]] = field(default_factory=set)
    # Verdicts of ``conforms`` on resources in this validation, by (id(resource), profile): a Bundle
    # entry is referenced by several others, and each targetProfile check walked it again. The
    # resources belong to the instance under validation, so the ids stay valid for the call.
    verdicts: dict[tuple[int, str], bool] = field(default_factory=dict)
    # How many walks were cut short (recursion guard, depth limit): a verdict reached while one was
    # cut depends on the path that led to it, so it is not remembered.
    cuts: int = 0


class ProfileError(Exception):
    """A profile that cannot be used (no snapshot could be generated)."""


class ProfileValidator:
    def __init__(self, definitions: Definitions, shapes: ShapeBuilder, terminology: Terminology,
                 invariants: InvariantChecker) -> None:
        self.defs = definitions
        self.shapes = shapes
        self.tx = terminology
        self.invariants = invariants
        self.snapshots = SnapshotGenerator(definitions)
        self._lock = threading.RLock()
        self._generation = -1
        self._schemas: dict[str, StructureSchema | ProfileError | None] = {}
        self._core_urls: set[str] | None = None
        self._is_core: dict[str, bool] = {}

    # -- definitions -------------------------------------------------------------------------

    def schema(self, url: str) -> StructureSchema | None:
        """The compiled profile, None when unknown; raises ProfileError when unusable."""
        if self._generation != self.defs.generation:
            with self._lock:
                self._schemas.clear()
                self._core_urls = None
                self._is_core.clear()
                self._generation = self.defs.generation
        hit: StructureSchema | ProfileError | Literal[False] | None = self._schemas.get(url, False)
        if hit is False:
            with self._lock:
                sd = self.defs.resolve(url)
                if sd is None and "|" in url:
                    sd = self.defs.resolve(url.partition("|")[0])
                if sd is None or sd.get("resourceType") != "StructureDefinition":
                    hit = None
                else:
                    try:
                        full = self.snapshots.with_snapshot(sd)
                        # Generated snapshots say what the profile changed; given ones do not.
                        changed = self.snapshots.changed.get(sd.get("url", "")) if full is not sd else None
                        hit = compile_structure(full, changed=changed)
                    except (SnapshotError, ValueError, KeyError, TypeError) as e:
                        hit = ProfileError(f"Profile {url} cannot be used: {e}")
                self._schemas[url] = hit
        if isinstance(hit, ProfileError):
            raise hit
        return hit

    def _safe_schema(self, url: str) -> StructureSchema | None:
        try:
            return self.schema(url)
        except ProfileError:
            return None

    def is_core(self, url: str | None) -> bool:
        if not url or not url.startswith(CORE_PREFIX):
            return False
        hit = self._is_core.get(url)
        if hit is None:
            hit = self._is_core[url] = self._compute_is_core(url)
        return hit

    def _compute_is_core(self, url: str) -> bool:
        if self._core_urls is None:
            self._core_urls = {f"{CORE_PREFIX}{t}" for t in self.defs.resource_types()}
        name = url[len(CORE_PREFIX):].partition("|")[0]
        if url.partition("|")[0] in self._core_urls:
            return True
        sd = self.defs.structure_definition(name)
        return sd is not None and sd.get("derivation") != "constraint" and sd.get("url") == url.partition("|")[0]

    # -- entry points ------------------------------------------------------------------------

    def validate_resource(self, res: dict[str, Any], url: str, path: str, ctx: ProfileContext) -> None:
        try:
            schema = self.schema(url)
        except ProfileError as e:
            ctx.sink.error("processing", MsgId.PROFILE_UNUSABLE, str(e), path)
            return
        if schema is None:
            ctx.sink.warning("not-found", MsgId.PROFILE_UNKNOWN,
                             f"Profile {url} is not known to this server; not checked", path)
            return
        for problem in self.snapshots.problems.get(schema.url, ()):
            ctx.sink.warning("processing", MsgId.PROFILE_UNUSABLE, f"Profile {url}: {problem} (ignored)", path)
        if schema.kind == "resource" and schema.type != res.get("resourceType") and schema.type not in (
                "Resource", "DomainResource"):
            ctx.sink.error("invalid", MsgId.PROFILE_UNUSABLE,
                           f"Profile {url} is for {schema.type} resources, not {res.get('resourceType')}", path)
            return
        if self.is_core(schema.url):
            return  # the structural pass has done exactly this
        key = (id(res), schema.url)
        if key in ctx.in_progress or ctx.depth > MAX_DEPTH:
            ctx.cuts += 1
            return
        ctx.in_progress.add(key)
        outer = ctx.resource
        ctx.resource = res
        ctx.depth += 1
        try:
            self._node(res, schema.root, schema, path, ctx)
        finally:
            ctx.depth -= 1
            ctx.resource = outer
            ctx.in_progress.discard(key)

    def validate_value(self, value: Any, url: str, type_code: str, path: str, ctx: ProfileContext) -> None:
        """A datatype or extension value against a profile of its type."""
        try:
            schema = self.schema(url)
        except ProfileError as e:
            ctx.sink.error("processing", MsgId.PROFILE_UNUSABLE, str(e), path)
            return
        if schema is None:
            ctx.sink.warning("not-found", MsgId.PROFILE_UNKNOWN, f"Profile {url} is not known; not checked", path)
            return
        if self.is_core(schema.url):
            return
        key = (id(value), schema.url)
        if key in ctx.in_progress or ctx.depth > MAX_DEPTH:
            ctx.cuts += 1
            return
        ctx.in_progress.add(key)
        ctx.depth += 1
        try:
            root = schema.root
            item = Item(value, None, "", type_code, path)
            self._item_checks(item, root, schema, ctx)
        finally:
            ctx.depth -= 1
            ctx.in_progress.discard(key)

    def conforms(self, value: Any, url: str, type_code: str, path: str, ctx: ProfileContext) -> bool:
        """Silently: does ``value`` (a resource or a datatype) conform to ``url``?"""
        is_resource = isinstance(value, dict) and "resourceType" in value
        # Only resources: a datatype's verdict also depends on %resource (ctx.resource) around it.
        memo_key = (id(value), url)
        if is_resource:
            hit = ctx.verdicts.get(memo_key)
            if hit is not None:
                return hit
        mark = ctx.sink.mark()
        cuts = ctx.cuts
        if is_resource:
            if self._structurally_valid(value, ctx) is False:
                ctx.sink.truncate(mark)
                return False
            self.validate_resource(value, url, path, ctx)
        else:
            self.validate_value(value, url, type_code, path, ctx)
        ok = not any(i.severity in ("error", "fatal") for i in ctx.sink.since(mark))
        ctx.sink.truncate(mark)
        if is_resource and ctx.cuts == cuts:
            ctx.verdicts[memo_key] = ok
        return ok

    def _structurally_valid(self, res: dict[str, Any], ctx: ProfileContext) -> bool | None:
        return None

    # -- the walk ----------------------------------------------------------------------------

    def _node(self, obj: dict[str, Any], elem: ElementDef, schema: StructureSchema, path: str,
              ctx: ProfileContext) -> None:
        # Below a contained resource or a Bundle entry, %resource is that resource; for the
        # constraints on the element that holds it, it is still the outer one (as the HL7 validator).
        outer = ctx.resource
        if "resourceType" in obj and obj is not outer:
            ctx.resource = obj
        try:
            for child in elem.children:
                if child.relevant:
                    if child.count_only is None:
                        child.count_only = self._is_count_only(child)
                    if child.count_only:
                        n = self._count(obj, child.name)
                        if n >= 0:
                            self._cardinality(child, n, path, ctx)
                            continue
                    self._group(self._items(obj, child, path), child, schema, path, ctx)
        finally:
            ctx.resource = outer
        self._constraints(elem, obj, path, schema, ctx)

    def _items(self, obj: dict[str, Any], elem: ElementDef, path: str) -> list[Item]:
        name = elem.name
        out: list[Item] = []
        if elem.choice:
            n = len(name)
            seen: set[str] = set()
            for k in obj:
                base = k[1:] if k.startswith("_") else k
                if len(base) > n and base.startswith(name) and base[n].isupper() and base not in seen:
                    code = self._type_of_suffix(base[n:])
                    if code is None:
                        continue
                    seen.add(base)
                    out.extend(self._collect(obj, base, code, f"{path}.{name}.ofType({code})", elem))
            return out
        if name not in obj and "_" + name not in obj:
            return out
        code = elem.types[0].code if len(elem.types) == 1 else (elem.types[0].code if elem.types else "")
        return self._collect(obj, name, code, f"{path}.{name}", elem)

    def _collect(self, obj: dict[str, Any], key: str, code: str, here: str, elem: ElementDef) -> list[Item]:
        v = obj.get(key)
        comp = obj.get("_" + key)
        if isinstance(v, list) or isinstance(comp, list):
            vs = v if isinstance(v, list) else []
            cs = comp if isinstance(comp, list) else []
            n = max(len(vs), len(cs))
            out = []
            for i in range(n):
                val = vs[i] if i < len(vs) else None
                c = cs[i] if i < len(cs) else None
                if val is None and c is None:
                    continue
                out.append(Item(val, c, key, self._actual_type(val, code), f"{here}[{i}]"))
            return out
        if v is None and comp is None:
            return []
        return [Item(v, comp, key, self._actual_type(v, code), here)]

    @staticmethod
    def _actual_type(value: Any, code: str) -> str:
        if isinstance(value, dict) and "resourceType" in value:
            rt = value.get("resourceType")
            if isinstance(rt, str):
                return rt
        return code

    def _type_of_suffix(self, suffix: str) -> str | None:
        lower = suffix[0].lower() + suffix[1:]
        if self.shapes.kind(lower) == "primitive-type":
            return lower
        if self.shapes.kind(suffix) is not None:
            return suffix
        return None

    def _is_count_only(self, elem: ElementDef) -> bool:
        """Does ``_item_checks`` do nothing on this element's values whatever they are (given the
        type its single type code says, see ``_count``)? Then the walk only counts them.

        That is: one non-choice type, no fixed/pattern/range/length, no binding checked, no children,
        slices, type profiles or constraints of its own: a profile that only narrows cardinality."""
        if elem.choice or elem.slicing is not None or elem.slices or elem.children or len(elem.types) != 1:
            return False
        code = elem.types[0].code
        if code not in elem.type_set or elem.has_type_profiles:
            return False
        if (elem.fixed is not None or elem.pattern is not None or elem.min_value is not None
                or elem.max_value is not None or elem.max_length is not None):
            return False
        b = elem.binding
        if b is not None and b.value_set and b.strength in ("required", "extensible") and code in BINDABLE:
            return False
        own = elem.own_constraints
        if own is None:
            own = elem.own_constraints = tuple(
                c for c in elem.constraints
                if c.key not in NATIVE_CONSTRAINTS and c.expression and not self.is_core(c.source))
        return not own

    @staticmethod
    def _count(obj: dict[str, Any], key: str) -> int:
        """How many items ``_items`` would give for a count-only element; -1 when a value is a
        resource (its type is then the resource type, which ``_item_checks`` must look at)."""
        v = obj.get(key)
        comp = obj.get("_" + key)
        if isinstance(v, list) or isinstance(comp, list):
            vs = v if isinstance(v, list) else []
            cs = comp if isinstance(comp, list) else []
            n = 0
            for i in range(max(len(vs), len(cs))):
                val = vs[i] if i < len(vs) else None
                if isinstance(val, dict) and "resourceType" in val:
                    return -1
                if val is not None or (i < len(cs) and cs[i] is not None):
                    n += 1
            return n
        if isinstance(v, dict) and "resourceType" in v:
            return -1
        return 0 if v is None and comp is None else 1

    def _cardinality(self, elem: ElementDef, n: int, parent_path: str, ctx: ProfileContext) -> None:
        if n < elem.min:
            label = elem.path + (f":{elem.slice_name}" if elem.slice_name else "")
            ctx.sink.error("required", MsgId.CARDINALITY_MIN,
                           f"{label}: minimum required = {elem.min}, but only found {n}", f"{parent_path}.{elem.name}")
        if 0 <= elem.max < n:
            label = elem.path + (f":{elem.slice_name}" if elem.slice_name else "")
            ctx.sink.error("structure", MsgId.CARDINALITY_MAX,
                           f"{label}: max allowed = {elem.max}, but found {n}", f"{parent_path}.{elem.name}")

    def _group(self, items: list[Item], elem: ElementDef, schema: StructureSchema, parent_path: str,
               ctx: ProfileContext) -> None:
        self._cardinality(elem, len(items), parent_path, ctx)
        if elem.slicing is not None and elem.slices and items:
            self._slicing(items, elem, schema, parent_path, ctx)
        elif elem.slices and not items:
            for s in elem.slices:
                self._group([], s, schema, parent_path, ctx)
        for item in items:
            self._item_checks(item, elem, schema, ctx)

    # -- one value ---------------------------------------------------------------------------

    def _item_checks(self, item: Item, elem: ElementDef, schema: StructureSchema, ctx: ProfileContext) -> None:
        sink = ctx.sink
        value = item.value
        allowed = elem.types
        if allowed and item.type_code not in elem.type_set and not self._type_allowed(item.type_code, elem):
            codes = ", ".join(t.code for t in allowed)
            sink.error("structure", MsgId.TYPE_NOT_ALLOWED,
                       f"{elem.path}: type {item.type_code} is not allowed here (allowed: {codes})", item.path)
            return
        if value is None:
            return
        if (type(value) is dict) != (item.type_code[:1].isupper() or item.type_code == ""):
            return  # the wrong JSON shape for its type: reported by the structural pass
        if elem.fixed is not None and not json_equal(value, elem.fixed[1]):
            sink.error("value", MsgId.FIXED_MISMATCH,
                       f"{elem.path}: value {describe(value)} does not equal the fixed value "
                       f"{describe(elem.fixed[1])}", item.path)
        if elem.pattern is not None and not matches_pattern(value, elem.pattern[1]):
            # On a primitive a pattern is a fixed value (profiling.html#pattern): same rule, same id.
            sink.error("value", MsgId.FIXED_MISMATCH if not isinstance(value, (dict, list)) else MsgId.PATTERN_MISMATCH,
                       f"{elem.path}: value {describe(value)} does not match the pattern "
                       f"{describe(elem.pattern[1])}", item.path)
        self._ranges(item, elem, sink)
        b = elem.binding
        if b is not None and b.value_set and b.strength in ("required", "extensible") and item.type_code in BINDABLE:
            if b.strength == "required" and item.type_code == "Quantity" and len(elem.types) > 1:
                # A required binding on a choice of many types (vitalsigns component.value[x]) holds the
                # units of a Quantity as extensible, as the HL7 reference validator does (validator cases
                # obs-percent: warning; bb-obs-value-is-not-in-valueset, Quantity only: error).
                b = Binding("extensible", b.value_set)
            key = value if isinstance(value, str) else coding_key(value, item.type_code)
            if key is None or key not in elem.good_codes:
                mark = sink.mark()
                check_binding(self.tx, b, item.type_code, value, item.path, sink)
                if key is not None and sink.mark() == mark and len(elem.good_codes) < 1024:
                    elem.good_codes.add(key)
        if isinstance(value, dict):
            if elem.children:
                self._node(value, elem, schema, item.path, ctx)
            elif elem is not schema.root:
                self._constraints(elem, value, item.path, schema, ctx)
            if elem.has_type_profiles:
                self._type_profiles(item, elem, ctx)

    def _type_allowed(self, code: str, elem: ElementDef) -> bool:
        for t in elem.types:
            if t.code == code or t.code in ("Resource", "DomainResource", "*"):
                return True
            if t.code == "BackboneElement" or t.code == "Element":
                return True
        # A narrowed datatype (SimpleQuantity, Age...) is still its base type in JSON.
        base = self.shapes.schema(code)
        return base is not None and any(
            t.code == base.type or t.code == (base.base_definition or "").rsplit("/", 1)[-1] for t in elem.types)

    def _ranges(self, item: Item, elem: ElementDef, sink: IssueSink) -> None:
        for limit_of, sign, msg_id, word in ((elem.min_value, -1, MsgId.MIN_VALUE, "less than the minimum"),
                                             (elem.max_value, 1, MsgId.MAX_VALUE, "greater than the maximum")):
            if limit_of is None:
                continue
            suffix, limit = limit_of
            if suffix == "Duration" and item.type_code in ("date", "dateTime", "instant"):
                moved = duration_limit(datetime.now(UTC), limit, sign)
                if moved is None:
                    continue
                limit = moved[:10] if item.type_code == "date" else moved
                c = compare("date" if item.type_code == "date" else "dateTime", item.value, limit)
            else:
                c = compare(item.type_code, item.value, limit)
            if c == sign:
                sink.error("value", msg_id, f"{elem.path}: value {describe(item.value)} is {word} "
                                            f"{describe(limit)}", item.path)
        max_len = elem.max_length
        if max_len is not None and isinstance(item.value, str) and len(item.value) > max_len:
            sink.error("value", MsgId.MAX_LENGTH,
                       f"{elem.path}: value is {len(item.value)} characters, more than maxLength {max_len}",
                       item.path)

    def _type_profiles(self, item: Item, elem: ElementDef, ctx: ProfileContext) -> None:
        value = item.value
        plan = elem.type_profiles
        if plan is None:
            # Which profiles are core does not change for this element (the schema is rebuilt when
            # the definitions change): filtered once, not for every value.
            every = [(t.code, tuple(p for p in t.profiles if not self.is_core(p)),
                      tuple(p for p in t.target_profiles if not self.is_core(p))) for t in elem.types]
            plan = elem.type_profiles = tuple(x for x in every if x[1] or x[2])
        for code, own_profiles, targets in plan:
            if code != item.type_code and not (code in ("Resource", "DomainResource")
                                               and isinstance(value, dict) and "resourceType" in value):
                continue
            profiles = list(own_profiles)
            if item.type_code == "Extension" and isinstance(value, dict):
                # The extension is checked against its own definition (by url) once, by the validator;
                # but a profile that demands a definition we lack cannot be said to be met.
                own = [p for p in profiles if p.partition("|")[0] == value.get("url")]
                for p in own:
                    if self._safe_schema(p) is None:
                        ctx.sink.error("not-found", MsgId.PROFILE_UNKNOWN,
                                       f"{elem.path}: the extension definition {p} this profile requires is not "
                                       "available, so conformance cannot be established", item.path)
                profiles = [p for p in profiles if p not in own]
            if profiles:
                if isinstance(value, dict) and "resourceType" in value:
                    if len(profiles) == 1:
                        self.validate_resource(value, profiles[0], item.path, ctx)
                    elif not any(self.conforms(value, p, item.type_code, item.path, ctx) for p in profiles):
                        ctx.sink.error("structure", MsgId.PROFILE_UNUSABLE,
                                       f"{elem.path}: the resource conforms to none of {', '.join(profiles)}",
                                       item.path)
                elif len(profiles) == 1:
                    self.validate_value(value, profiles[0], item.type_code, item.path, ctx)
                elif not any(self.conforms(value, p, item.type_code, item.path, ctx) for p in profiles):
                    ctx.sink.error("structure", MsgId.PROFILE_UNUSABLE,
                                   f"{elem.path}: the value conforms to none of {', '.join(profiles)}", item.path)
            if targets and item.type_code == "Reference" and isinstance(value, dict):
                ref = value.get("reference")
                target = ctx.resolve(ref, ctx.resource) if isinstance(ref, str) else None
                if target is not None and not any(
                        self.conforms(target, p, target.get("resourceType", ""), item.path, ctx) for p in targets):
                    ctx.sink.error("structure", MsgId.REFERENCE_TARGET_TYPE,
                                   f"{elem.path}: the referenced resource {ref} conforms to none of "
                                   f"{', '.join(targets)}", item.path)

    def _constraints(self, elem: ElementDef, node: Any, path: str, schema: StructureSchema,
                     ctx: ProfileContext) -> None:
        own = elem.own_constraints
        if own is None:
            own = elem.own_constraints = tuple(
                c for c in elem.constraints
                if c.key not in NATIVE_CONSTRAINTS and c.expression and not self.is_core(c.source))
        if own:
            if isinstance(node, dict) and isinstance(node.get("resourceType"), str):
                type_path = node["resourceType"]
            elif elem.children or "." not in elem.path:
                type_path = elem.path
            else:
                type_path = elem.types[0].code if elem.types else elem.path
            source = ctx.resource
            self.invariants.check(own, node, path, type_path, source, ctx.root_of(source), ctx.sink,
                                  lambda ref: ctx.resolve(ref, source))

    # -- slicing -----------------------------------------------------------------------------

    def _slicing(self, items: list[Item], elem: ElementDef, schema: StructureSchema, parent_path: str,
                 ctx: ProfileContext) -> None:
        slicing = elem.slicing or {}
        discs = slicing.get("discriminator") or []
        rules = slicing.get("rules", "open")
        ordered = bool(slicing.get("ordered"))
        assigned: list[int] = []
        per_slice: list[list[Item]] = [[] for _ in elem.slices]
        for item in items:
            idx = -1
            for si, s in enumerate(elem.slices):
                if self._matches(item, s, discs, schema, ctx):
                    idx = si
                    break
            assigned.append(idx)
            if idx >= 0:
                per_slice[idx].append(item)
            elif rules == "closed":
                ctx.sink.error("structure", MsgId.SLICE_CLOSED,
                               f"{elem.path}: this element matches no slice, and the slicing is closed", item.path)
        if ordered:
            last = -1
            for item, idx in zip(items, assigned, strict=True):
                if idx >= 0:
                    if idx < last:
                        ctx.sink.error("structure", MsgId.SLICE_ORDER,
                                       f"{elem.path}: slices are out of order (ordered slicing)", item.path)
                    last = max(last, idx)
        if rules == "openAtEnd":
            seen_unmatched = False
            for item, idx in zip(items, assigned, strict=True):
                if idx < 0:
                    seen_unmatched = True
                elif seen_unmatched:
                    ctx.sink.error("structure", MsgId.SLICE_ORDER,
                                   f"{elem.path}: unsliced elements must come last (openAtEnd)", item.path)
        for s, matched in zip(elem.slices, per_slice, strict=True):
            self._group(matched, s, schema, parent_path, ctx)

    def _matches(self, item: Item, s: ElementDef, discs: list[dict[str, Any]], schema: StructureSchema,
                 ctx: ProfileContext) -> bool:
        if not discs:
            return self._silently(lambda: self._item_checks(item, s, schema, ctx), ctx)
        for d in discs:
            if not self._disc_match(item, s, d.get("type", "value"), d.get("path", "$this"), schema, ctx):
                return False
        return True

    def _silently(self, fn: Callable[[], None], ctx: ProfileContext) -> bool:
        mark = ctx.sink.mark()
        fn()
        ok = not any(i.severity in ("error", "fatal") for i in ctx.sink.since(mark))
        ctx.sink.truncate(mark)
        return ok

    def _disc_match(self, item: Item, s: ElementDef, dtype: str, dpath: str, schema: StructureSchema,
                    ctx: ProfileContext) -> bool:
        steps = split_path(dpath)
        values = self._instance_values(item, steps, ctx)
        target = self._slice_element(s, steps)
        if dtype in ("value", "pattern"):
            expected = None
            is_fixed = False
            if target is not None:
                if target.fixed is not None:
                    expected, is_fixed = target.fixed[1], True
                elif target.pattern is not None:
                    expected = target.pattern[1]
            if expected is None and steps == ["url"] and item.type_code == "Extension":
                prof = next((p for t in s.types for p in t.profiles), None)
                if prof is not None:
                    expected, is_fixed = prof.partition("|")[0], True
            if expected is None:
                b = target.binding if target is not None else None
                if b is not None and b.value_set and b.strength == "required":
                    coded = [(v.get("system"), v.get("code")) if isinstance(v, dict) else (None, v)
                             for v, _ in values if isinstance(v, (dict, str))]
                    # A value without a code is in no ValueSet.
                    return any(isinstance(code, str) and self.tx.validate_code(b.value_set, system, code).valid
                               for system, code in coded)
                # The slice does not constrain this discriminator: it does not tell slices apart here
                # (validator case type-subtype-slicing: a sub-discriminator not every slice uses).
                return True
            if is_fixed:
                return any(json_equal(v, expected) for v, _ in values)
            return any(matches_pattern(v, expected) for v, _ in values)
        if dtype == "exists":
            if target is None:
                return True
            if target.min >= 1:
                return bool(values)
            if target.max == 0:
                return not values
            return True
        if dtype == "type":
            elem = target if target is not None else s
            codes = {t.code for t in elem.types}
            if not codes:
                return True
            for v, code in values:
                actual = v.get("resourceType") if isinstance(v, dict) and "resourceType" in v else code
                if actual in codes:
                    return True
                # A resource type slice given only by a profile: the profile's type decides.
                for t in elem.types:
                    for p in t.profiles:
                        try:
                            ps = self.schema(p)
                        except ProfileError:
                            ps = None
                        if ps is not None and ps.type == actual:
                            return True
            return False
        if dtype == "profile":
            elem = target if target is not None else s
            profiles = [(t.code, p) for t in elem.types for p in (t.profiles or t.target_profiles)]
            if not profiles:
                return True
            for v, code in values:
                actual = v.get("resourceType") if isinstance(v, dict) and "resourceType" in v else code
                for t_code, p in profiles:
                    if t_code not in (actual, "Resource", "Reference") and actual != t_code:
                        try:
                            ps = self.schema(p)
                        except ProfileError:
                            continue
                        if ps is None or ps.type != actual:
                            continue
                    if self.conforms(v, p, actual or code, item.path, ctx):
                        return True
            return False
        return False

    def _instance_values(self, item: Item, steps: list[str], ctx: ProfileContext) -> list[tuple[Any, str]]:
        cur: list[tuple[Any, str]] = [(item.value, item.type_code)]
        for step in steps:
            nxt: list[tuple[Any, str]] = []
            if step == "$this":
                continue
            if step == "resolve()":
                for v, _ in cur:
                    ref = v.get("reference") if isinstance(v, dict) else None
                    target = ctx.resolve(ref, ctx.resource) if isinstance(ref, str) else None
                    if target is not None:
                        nxt.append((target, target.get("resourceType", "")))
            elif step.startswith("ofType("):
                want = step[7:-1]
                nxt = [(v, c) for v, c in cur if c == want or (isinstance(v, dict) and v.get("resourceType") == want)]
            elif step.startswith("extension("):
                url = step[10:-1].strip("'\"")
                for v, _ in cur:
                    if isinstance(v, dict):
                        for e in dicts(v.get("extension")):
                            if e.get("url") == url:
                                nxt.append((e, "Extension"))
            else:
                for v, _ in cur:
                    if not isinstance(v, dict):
                        continue
                    if step in v:
                        x = v[step]
                        for y in x if isinstance(x, list) else [x]:
                            nxt.append((y, "Resource" if isinstance(y, dict) and "resourceType" in y else ""))
                    else:
                        n = len(step)
                        for k, x in v.items():
                            if len(k) > n and k.startswith(step) and k[n].isupper():
                                code = self._type_of_suffix(k[n:]) or k[n:]
                                for y in x if isinstance(x, list) else [x]:
                                    nxt.append((y, code))
            cur = nxt
        return cur

    def _slice_element(self, s: ElementDef, steps: list[str]) -> ElementDef | None:
        cur: ElementDef | None = s
        for step in steps:
            if cur is None:
                return None
            if step in ("$this", "resolve()") or step.startswith("ofType("):
                continue
            if step.startswith("extension("):
                url = step[10:-1].strip("'\"")
                ext = cur.child("extension")
                cur = None
                if ext is not None:
                    for sl in ext.slices:
                        if any(p.partition("|")[0] == url for t in sl.types for p in t.profiles):
                            cur = sl
                            break
                        u = sl.child("url")
                        if u is not None and u.fixed is not None and u.fixed[1] == url:
                            cur = sl
                            break
                continue
            nxt = cur.child(step)
            if nxt is None and not cur.children:
                # The slice does not expand this type here; its type profile may.
                for t in cur.types:
                    for p in t.profiles:
                        try:
                            ps = self.schema(p)
                        except ProfileError:
                            ps = None
                        if ps is not None:
                            nxt = ps.root.child(step)
                            if nxt is not None:
                                break
                    if nxt is not None:
                        break
            cur = nxt
        return cur


def split_path(path: str) -> list[str]:
    """``extension('http://a.b/c').value`` → ["extension('http://a.b/c')", "value"]."""
    out: list[str] = []
    depth = 0
    quote = False
    cur = ""
    for ch in path:
        if ch == "'" and depth:
            quote = not quote
        if not quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "." and depth == 0:
                out.append(cur)
                cur = ""
                continue
        cur += ch
    if cur:
        out.append(cur)
    return out
