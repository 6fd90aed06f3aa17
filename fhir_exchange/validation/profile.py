"""Validation against profiles: https://hl7.org/fhir/R4/profiling.html and https://hl7.org/fhir/R4/validation.html#profile.

The structural pass (:mod:`structure`) has already checked everything the core definitions say.
This walker follows a profile's element tree over the instance and checks what profiles add:
cardinality narrowed (min/max, including max 0), types narrowed, ``fixed[x]`` and ``pattern[x]``,
``minValue[x]``/``maxValue[x]``/``maxLength``, bindings, slicing (:mod:`slicing`), type profiles
(datatype, extension and resource profiles on an element, ``targetProfile`` of references that
resolve in the Bundle or in ``contained``), and the profile's own invariants.

Where a profile leaves an element unconstrained (no children in its snapshot, or not changed by
its differential), the walk stops: the structural pass covered it. What the walk does on each
element is decided once per profile (:mod:`profile_compile`): the children it visits, those it only
counts, whether an absent one matters, what is checked on a value; paths are built only for values
present. Profiles are compiled and cached per definitions generation (:mod:`profile_schema_cache`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation.bindings import check_binding
from fhir_exchange.validation.invariants import InvariantChecker
from fhir_exchange.validation.issues import IssueSink, MsgId
from fhir_exchange.validation.profile_compile import (
    CHOICE,
    COUNT,
    Step,
    ValuePlan,
    is_complex,
    is_count_only,
    own_constraints,
    steps_of,
    type_profile_plan,
    value_plan_of,
)
from fhir_exchange.validation.profile_context import Item, ProfileContext, Resolver
from fhir_exchange.validation.profile_schema_cache import CORE_PREFIX, ProfileError, ProfileSchemas
from fhir_exchange.validation.schema import ElementDef, StructureSchema
from fhir_exchange.validation.shapes import BINDABLE, ShapeBuilder
from fhir_exchange.validation.slicing import check_slicing, split_path
from fhir_exchange.validation.snapshot import SnapshotGenerator
from fhir_exchange.validation.structure import coding_key
from fhir_exchange.validation.terminology import Terminology
from fhir_exchange.validation.values import compare, describe, duration_limit

__all__ = ["CORE_PREFIX", "MAX_DEPTH", "Item", "ProfileContext", "ProfileError", "ProfileValidator", "Resolver",
           "split_path"]

MAX_DEPTH: Final = 12  # profiles of references of profiles...: deep enough for real IGs, bounded against cycles


class ProfileValidator:
    def __init__(self, definitions: Definitions, shapes: ShapeBuilder, terminology: Terminology,
                 invariants: InvariantChecker, *, check_invariants: bool = True) -> None:
        """``check_invariants=False``: the profiles' own constraints (FHIRPath) are not evaluated, as
        the core ones are not by ``Validator(invariants=False)``; fixed for the life of the validator,
        since the compiled plans of the profiles' elements depend on it."""
        self.defs = definitions
        self.shapes = shapes
        self.tx = terminology
        self.invariants = invariants
        self.check_invariants = check_invariants
        self.snapshots = SnapshotGenerator(definitions)
        self.cache = ProfileSchemas(definitions, self.snapshots)
        # Skip what is known to report nothing: a resource walked already against the same profile
        # without an issue (ProfileContext.clean), a single reference that resolves to no target
        # (Step.targets_only). False walks everything again: the tests compare both ways.
        self.shortcuts = True

    # -- definitions -------------------------------------------------------------------------

    def schema(self, url: str) -> StructureSchema | None:
        """The compiled profile, None when unknown; raises ProfileError when unusable."""
        return self.cache.schema(url)

    def is_core(self, url: str | None) -> bool:
        return self.cache.is_core(url)

    # -- entry points ------------------------------------------------------------------------

    def validate_resource(self, res: dict[str, Any], url: str, path: str, ctx: ProfileContext) -> None:
        key = (id(res), url)
        if key in ctx.clean and self.shortcuts:
            return  # walked already without a single issue (ProfileContext.clean)
        # The walk reports into a sink of its own, then into the caller's: so its issues are known in
        # full (those the caller's sink would drop as duplicates too), and with them its verdict.
        outer = ctx.sink
        own = ctx.sink = IssueSink()
        cuts = ctx.cuts
        try:
            self._validate_resource(res, url, path, ctx)
        finally:
            ctx.sink = outer
        issues = own.since(0)
        if ctx.cuts == cuts and self.shortcuts:
            if own.attempts == 0:
                ctx.clean.add(key)
            else:
                # Errors or not does not depend on the path the walk ran at: what conforms() asks of
                # an entry another entry's targetProfile names, after the entry's own meta.profile walk.
                ctx.verdicts.setdefault(key, not any(i.severity in ("error", "fatal") for i in issues))
        if issues:
            outer.extend(issues)

    def _validate_resource(self, res: dict[str, Any], url: str, path: str, ctx: ProfileContext) -> None:
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
            if memo_key in ctx.clean and self.shortcuts:
                return True
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
            # Typed here (ElementDef holds them as Any, schema.py cannot import this module): the
            # compiled build reads a Step's fields directly instead of looking each name up.
            steps: tuple[Step, ...] | None = elem.steps
            if steps is None:
                steps = steps_of(self, elem)
            for st in steps:
                child = st.elem
                if st.mode == CHOICE:
                    items = self._items(obj, child, path)
                    if items or not st.empty_ok:
                        self._group(items, child, schema, path, ctx)
                    continue
                v = obj.get(st.name)
                comp = obj.get(st.companion)
                if v is None and comp is None:
                    if not st.empty_ok:
                        self._group([], child, schema, path, ctx)
                    continue
                if st.mode == COUNT:
                    if isinstance(v, list) or isinstance(comp, list):
                        n = self._count(obj, st.name)
                    else:
                        n = -1 if isinstance(v, dict) and "resourceType" in v else 1
                    if n >= 0:
                        if n < child.min or 0 <= child.max < n:
                            self._cardinality(child, n, path, ctx)
                        continue
                if isinstance(v, list) or isinstance(comp, list):
                    if (st.targets_only and comp is None and isinstance(v, list) and self.shortcuts
                            and self._no_targets(v, child, ctx)):
                        continue  # what _group would find: a count in range, no reference to a target
                    items = self._collect(obj, st.name, st.code, f"{path}.{st.name}", child)
                    self._group(items, child, schema, path, ctx)
                    continue
                if st.inert and (st.any_resource or not (isinstance(v, dict) and "resourceType" in v)):
                    continue  # one value of its own type, nothing to check on it: _item_checks does nothing
                if (st.targets_only and st.one_ok and self.shortcuts and isinstance(v, dict)
                        and "resourceType" not in v):
                    ref = v.get("reference")
                    if not isinstance(ref, str) or ctx.resolve(ref, ctx.resource) is None:
                        continue  # no target to hold to its targetProfile: _item_checks does nothing
                actual = st.code
                if isinstance(v, dict) and "resourceType" in v:
                    actual = self._actual_type(v, actual)
                item = Item(v, comp, st.name, actual, f"{path}.{st.name}")
                if st.one_ok:
                    self._item_checks(item, child, schema, ctx)  # what _group does with one value here
                else:
                    self._group([item], child, schema, path, ctx)
        finally:
            ctx.resource = outer
        own = elem.own_constraints
        if own is None:
            own = own_constraints(self, elem)
        if own:
            self._constraints(elem, obj, path, schema, ctx)

    @staticmethod
    def _no_targets(values: list[Any], elem: ElementDef, ctx: ProfileContext) -> bool:
        """Do these references (an element with no slices, whose only check is targetProfile: see
        Step.targets_only) meet the cardinality and resolve to nothing, so that _group reports nothing?"""
        n = 0
        for v in values:
            if v is None:
                continue  # _collect skips it
            if not isinstance(v, dict) or "resourceType" in v:
                return False
            ref = v.get("reference")
            if isinstance(ref, str) and ctx.resolve(ref, ctx.resource) is not None:
                return False
            n += 1
        return n >= elem.min and (elem.max < 0 or n <= elem.max)

    def _items(self, obj: dict[str, Any], elem: ElementDef, path: str) -> list[Item]:
        name = elem.name
        out: list[Item] = []
        if elem.choice:
            # key -> (key without "_", its type code), or None when the key is not a value of this
            # choice: decided once per key seen (it depends on the name and the definitions only).
            keys = elem.choice_keys
            if keys is None:
                keys = elem.choice_keys = {}
            seen: set[str] = set()
            for k in obj:
                if k in keys:
                    hit = keys[k]
                else:
                    hit = self._choice_key(name, k)
                    if len(keys) < 256:  # keys come from instances: bounded
                        keys[k] = hit
                if hit is not None and hit[0] not in seen:
                    base, code = hit
                    seen.add(base)
                    out.extend(self._collect(obj, base, code, f"{path}.{name}.ofType({code})", elem))
            return out
        if name not in obj and "_" + name not in obj:
            return out
        code = elem.types[0].code if elem.types else ""
        return self._collect(obj, name, code, f"{path}.{name}", elem)

    def _choice_key(self, name: str, k: str) -> tuple[str, str] | None:
        n = len(name)
        base = k[1:] if k.startswith("_") else k
        if len(base) > n and base.startswith(name) and base[n].isupper():
            code = self._type_of_suffix(base[n:])
            if code is not None:
                return base, code
        return None

    def _collect(self, obj: dict[str, Any], key: str, code: str, here: str, elem: ElementDef) -> list[Item]:
        v = obj.get(key)
        comp = obj.get("_" + key)
        if comp is None and isinstance(v, list):
            # The usual list: no primitive companions (what the general case below gives then).
            out = []
            for i, val in enumerate(v):
                if val is None:
                    continue
                actual = code
                if isinstance(val, dict) and "resourceType" in val:
                    actual = self._actual_type(val, code)
                out.append(Item(val, None, key, actual, f"{here}[{i}]"))
            return out
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
        return is_count_only(self, elem)

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
        n = len(items)
        if n < elem.min or 0 <= elem.max < n:
            self._cardinality(elem, n, parent_path, ctx)
        if elem.slicing is not None and elem.slices and items:
            check_slicing(self, items, elem, schema, parent_path, ctx)
        elif elem.slices and not items:
            for s in elem.slices:
                self._group([], s, schema, parent_path, ctx)
        for item in items:
            self._item_checks(item, elem, schema, ctx)

    # -- one value ---------------------------------------------------------------------------

    def _item_checks(self, item: Item, elem: ElementDef, schema: StructureSchema, ctx: ProfileContext) -> None:
        plan: ValuePlan | None = elem.value_plan  # typed: see _node
        if plan is None:
            plan = value_plan_of(self, elem)
        value = item.value
        code = item.type_code
        if plan.typed and code not in elem.type_set and not self._type_allowed(code, elem):
            codes = ", ".join(t.code for t in elem.types)
            ctx.sink.error("structure", MsgId.TYPE_NOT_ALLOWED,
                           f"{elem.path}: type {code} is not allowed here (allowed: {codes})", item.path)
            return
        if value is None or plan.trivial:
            return
        if (type(value) is dict) != is_complex(code):
            return  # the wrong JSON shape for its type: reported by the structural pass
        if plan.fixed is not None and not plan.fixed(value):
            assert elem.fixed is not None
            ctx.sink.error("value", MsgId.FIXED_MISMATCH,
                           f"{elem.path}: value {describe(value)} does not equal the fixed value "
                           f"{describe(elem.fixed[1])}", item.path)
        if plan.pattern is not None and not plan.pattern(value):
            assert elem.pattern is not None
            # On a primitive a pattern is a fixed value (profiling.html#pattern): same rule, same id.
            ctx.sink.error("value", MsgId.FIXED_MISMATCH if not isinstance(value, (dict, list))
                           else MsgId.PATTERN_MISMATCH,
                           f"{elem.path}: value {describe(value)} does not match the pattern "
                           f"{describe(elem.pattern[1])}", item.path)
        if plan.ranges:
            self._ranges(item, elem, ctx.sink)
        b = plan.binding
        if b is not None and code in BINDABLE:
            if code == "Quantity" and plan.binding_quantity is not None:
                b = plan.binding_quantity
            key = value if isinstance(value, str) else coding_key(value, code)
            if key is None or key not in elem.good_codes:
                sink = ctx.sink
                # Good only when the check reported nothing at all: an issue the sink drops as a
                # duplicate (the structural pass reported it on the same element) still makes it bad.
                attempts = sink.attempts
                check_binding(self.tx, b, code, value, item.path, sink)
                if key is not None and sink.attempts == attempts and len(elem.good_codes) < 1024:
                    elem.good_codes.add(key)
        if isinstance(value, dict):
            if elem.children:
                self._node(value, elem, schema, item.path, ctx)
            elif plan.constraints and elem is not schema.root:
                self._constraints(elem, value, item.path, schema, ctx)
            if plan.type_profiles:
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
        plan = type_profile_plan(self, elem)
        for code, own_profiles, targets in plan:
            if code != item.type_code and not (code in ("Resource", "DomainResource")
                                               and isinstance(value, dict) and "resourceType" in value):
                continue
            profiles: tuple[str, ...] | list[str] = own_profiles
            if profiles and item.type_code == "Extension" and isinstance(value, dict):
                # The extension is checked against its own definition (by url) once, by the validator;
                # but a profile that demands a definition we lack cannot be said to be met.
                own = [p for p in profiles if p.partition("|")[0] == value.get("url")]
                for p in own:
                    if self.cache.safe_schema(p) is None:
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
        own = own_constraints(self, elem)
        if own:
            if isinstance(node, dict) and isinstance(node.get("resourceType"), str):
                type_path = node["resourceType"]
            elif elem.children or "." not in elem.path:
                type_path = elem.path
            else:
                type_path = elem.types[0].code if elem.types else elem.path
            source = ctx.resource
            self.invariants.check(own, node, path, type_path, source, ctx.root_of(source), ctx.sink,
                                  lambda ref: ctx.resolve(ref, source), ctx.typed_descendants)
