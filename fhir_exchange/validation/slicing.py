"""Slicing in profiles: https://hl7.org/fhir/R4/profiling.html#slicing and #discriminator.

The values of a sliced element are assigned to the first slice whose discriminators they meet
(``value``, ``pattern``, ``exists``, ``type``, ``profile``; with none, the first slice the value
conforms to, silently); then the rules: ``closed`` refuses a value that matches no slice,
``openAtEnd`` one that comes before a matched one, ``ordered`` slices out of order.

When every slice fixes a string for every ``value``/``pattern`` discriminator (the usual slicing of
identifiers by ``system``, extensions by ``url``, telecom by ``system``), the slices are indexed by
those strings once per element, and a value finds its slice by one lookup per discriminator
instead of trying each slice in turn; the outcome is the same as trying them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fhir_exchange.validation.issues import MsgId
from fhir_exchange.validation.jsonutil import dicts
from fhir_exchange.validation.profile_context import Item, ProfileContext
from fhir_exchange.validation.profile_schema_cache import ProfileError
from fhir_exchange.validation.schema import ElementDef, StructureSchema
from fhir_exchange.validation.values import json_equal, matches_pattern

if TYPE_CHECKING:
    from fhir_exchange.validation.profile import ProfileValidator

# Per discriminator: (steps, exact strings -> slice indexes, pattern strings -> slice indexes).
DiscIndex = tuple[list[str], dict[str, frozenset[int]], dict[str, frozenset[int]]]


def check_slicing(pv: ProfileValidator, items: list[Item], elem: ElementDef, schema: StructureSchema,
                  parent_path: str, ctx: ProfileContext) -> None:
    slicing = elem.slicing or {}
    discs = slicing.get("discriminator") or []
    rules = slicing.get("rules", "open")
    ordered = bool(slicing.get("ordered"))
    assigned: list[int] = []
    per_slice: list[list[Item]] = [[] for _ in elem.slices]
    for item in items:
        index = _index(pv, elem, discs, item.type_code == "Extension")
        if index is not None:
            idx = _lookup(pv, item, index, ctx)
        else:
            idx = -1
            for si, s in enumerate(elem.slices):
                if _matches(pv, item, s, discs, schema, ctx):
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
        pv._group(matched, s, schema, parent_path, ctx)


# -- the index -------------------------------------------------------------------------------


def _expected(pv: ProfileValidator, s: ElementDef, steps: list[str], is_extension: bool) -> tuple[Any, bool]:
    """What a value/pattern discriminator at ``steps`` wants in slice ``s``: (value, is_fixed);
    value None when the slice does not say (as ``_disc_match`` reads it)."""
    target = slice_element(pv, s, steps)
    expected: Any = None
    is_fixed = False
    if target is not None:
        if target.fixed is not None:
            expected, is_fixed = target.fixed[1], True
        elif target.pattern is not None:
            expected = target.pattern[1]
    if expected is None and steps == ["url"] and is_extension:
        prof = next((p for t in s.types for p in t.profiles), None)
        if prof is not None:
            expected, is_fixed = prof.partition("|")[0], True
    return expected, is_fixed


def _index(pv: ProfileValidator, elem: ElementDef, discs: list[dict[str, Any]],
           is_extension: bool) -> list[DiscIndex] | None:
    """The slices of ``elem`` by the strings their discriminators fix; None when not indexable."""
    cache = elem.slice_index
    if cache is None:
        cache = elem.slice_index = {}
    if is_extension in cache:
        hit: list[DiscIndex] | None = cache[is_extension]
        return hit
    out: list[DiscIndex] | None = []
    if not discs or any(d.get("type", "value") not in ("value", "pattern") for d in discs):
        out = None
    for d in discs if out is not None else ():
        steps = split_path(d.get("path", "$this"))
        exact: dict[str, set[int]] = {}
        pattern: dict[str, set[int]] = {}
        for si, s in enumerate(elem.slices):
            expected, is_fixed = _expected(pv, s, steps, is_extension)
            if not isinstance(expected, str):
                out = None  # a binding, a complex pattern, or nothing: tried slice by slice
                break
            (exact if is_fixed else pattern).setdefault(expected, set()).add(si)
        if out is None:
            break
        out.append((steps, {k: frozenset(v) for k, v in exact.items()},
                    {k: frozenset(v) for k, v in pattern.items()}))
    cache[is_extension] = out
    return out


def _lookup(pv: ProfileValidator, item: Item, index: list[DiscIndex], ctx: ProfileContext) -> int:
    """The first slice whose every discriminator has one of the item's values (json_equal for a
    fixed string, matches_pattern for a pattern one: a list matches by any member)."""
    if len(index) == 1:
        steps, exact, pattern = index[0]
        value = item.value
        if (len(steps) == 1 and type(value) is dict and steps[0] in value and "(" not in steps[0]
                and steps[0] != "$this"):
            x = value[steps[0]]
            if isinstance(x, str):  # the usual case (a system, a url): instance_values gives [x]
                hit = exact.get(x, frozenset()) | pattern.get(x, frozenset())
                return min(hit) if hit else -1
    found: set[int] | None = None
    for steps, exact, pattern in index:
        here: set[int] = set()
        for v, _ in instance_values(pv, item, steps, ctx):
            if isinstance(v, str):
                here.update(exact.get(v, ()))
                here.update(pattern.get(v, ()))
            elif isinstance(v, list) and pattern:
                _members(v, pattern, here)
        found = here if found is None else found & here
        if not found:
            return -1
    return min(found) if found else -1


def _members(values: list[Any], pattern: dict[str, frozenset[int]], into: set[int]) -> None:
    """matches_pattern(list, string): any member (of nested lists too) equal to the string."""
    for x in values:
        if isinstance(x, str):
            into.update(pattern.get(x, ()))
        elif isinstance(x, list):
            _members(x, pattern, into)


# -- matching slice by slice -------------------------------------------------------------------


def _matches(pv: ProfileValidator, item: Item, s: ElementDef, discs: list[dict[str, Any]],
             schema: StructureSchema, ctx: ProfileContext) -> bool:
    if not discs:
        return _silently(lambda: pv._item_checks(item, s, schema, ctx), ctx)
    return all(_disc_match(pv, item, s, d.get("type", "value"), d.get("path", "$this"), ctx) for d in discs)


def _silently(fn: Callable[[], None], ctx: ProfileContext) -> bool:
    mark = ctx.sink.mark()
    fn()
    ok = not any(i.severity in ("error", "fatal") for i in ctx.sink.since(mark))
    ctx.sink.truncate(mark)
    return ok


def _disc_match(pv: ProfileValidator, item: Item, s: ElementDef, dtype: str, dpath: str,
                ctx: ProfileContext) -> bool:
    steps = split_path(dpath)
    values = instance_values(pv, item, steps, ctx)
    target = slice_element(pv, s, steps)
    if dtype in ("value", "pattern"):
        expected, is_fixed = _expected(pv, s, steps, item.type_code == "Extension")
        if expected is None:
            b = target.binding if target is not None else None
            if b is not None and b.value_set and b.strength == "required":
                coded = [(v.get("system"), v.get("code")) if isinstance(v, dict) else (None, v)
                         for v, _ in values if isinstance(v, (dict, str))]
                # A value without a code is in no ValueSet.
                return any(isinstance(code, str) and pv.tx.validate_code(b.value_set, system, code).valid
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
                        ps = pv.schema(p)
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
                        ps = pv.schema(p)
                    except ProfileError:
                        continue
                    if ps is None or ps.type != actual:
                        continue
                if pv.conforms(v, p, actual or code, item.path, ctx):
                    return True
        return False
    return False


def instance_values(pv: ProfileValidator, item: Item, steps: list[str], ctx: ProfileContext) -> list[tuple[Any, str]]:
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
                            code = pv._type_of_suffix(k[n:]) or k[n:]
                            for y in x if isinstance(x, list) else [x]:
                                nxt.append((y, code))
        cur = nxt
    return cur


def slice_element(pv: ProfileValidator, s: ElementDef, steps: list[str]) -> ElementDef | None:
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
            nxt = _type_profile_child(pv, cur, step)
        cur = nxt
    return cur


def _type_profile_child(pv: ProfileValidator, elem: ElementDef, step: str) -> ElementDef | None:
    """``step`` below ``elem`` when the slice does not expand its type here but a type profile does."""
    for t in elem.types:
        for p in t.profiles:
            try:
                ps = pv.schema(p)
            except ProfileError:
                continue
            if ps is not None:
                found = ps.root.child(step)
                if found is not None:
                    return found
    return None


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
