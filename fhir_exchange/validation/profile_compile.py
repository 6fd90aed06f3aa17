"""The profile walk decided once per element: https://hl7.org/fhir/R4/profiling.html.

For every element of a compiled profile (:mod:`schema`) the walker in :mod:`profile` asks the same
questions on every value: which children does the profile constrain, which of them only narrow
cardinality, does an absent child matter, is there a fixed or pattern value, a range, a binding to
check, constraints of the profile's own, type profiles that are not core? The answers depend only on
the profile, so they are computed the first time the element is walked and kept on the element
(``ElementDef.steps`` and ``ElementDef.value_plan``); the schema, and with it the plans, is rebuilt
when the definitions change (:mod:`profile_schema_cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fhir_exchange.validation.schema import Binding, Constraint, ElementDef
from fhir_exchange.validation.shapes import BINDABLE, NATIVE_CONSTRAINTS
from fhir_exchange.validation.values import json_equal

if TYPE_CHECKING:
    from fhir_exchange.validation.profile import ProfileValidator

COUNT, PLAIN, CHOICE = 0, 1, 2  # Step.mode


Matcher = Callable[[Any], bool]


def compile_fixed(fixed: Any) -> Matcher:
    """``lambda v: json_equal(v, fixed)``; for a string (the usual fixed uri or code) plain equality,
    which is what json_equal gives against a string (a bool or a number is never equal to one)."""
    if isinstance(fixed, str):
        return lambda v: bool(v == fixed)
    return lambda v: json_equal(v, fixed)


def compile_pattern(pattern: Any) -> Matcher:
    """``lambda v: matches_pattern(v, pattern)`` (values.py), with the pattern's structure unrolled
    once: an object needs each of its keys matched, a list each of its items matched by some item of
    the value, a primitive equality (against any item, when the value is a list)."""
    if isinstance(pattern, dict):
        keyed = tuple((k, compile_pattern(v)) for k, v in pattern.items())

        def match_object(v: Any) -> bool:
            if not isinstance(v, dict):
                return False
            for k, sub in keyed:  # noqa: SIM110 (a loop: all() over a generator costs more per value)
                if k not in v or not sub(v[k]):
                    return False
            return True
        return match_object
    if isinstance(pattern, list):
        subs = tuple(compile_pattern(p) for p in pattern)

        def match_list(v: Any) -> bool:
            items = v if isinstance(v, list) else [v]
            return all(any(sub(x) for x in items) for sub in subs)
        return match_list
    equal = compile_fixed(pattern)

    def match_primitive(v: Any) -> bool:
        if isinstance(v, list):
            return any(match_primitive(x) for x in v)
        return equal(v)
    return match_primitive


@dataclass(slots=True, frozen=True)
class Step:
    """One child the profile constrains, as its parent's walk visits it."""
    elem: ElementDef
    mode: int  # COUNT: only its number matters; PLAIN: one type, one key; CHOICE: value[x]
    name: str
    companion: str  # "_" + name: the key of a primitive's id and extensions
    code: str  # the type code of a PLAIN element's values
    empty_ok: bool  # no value at all gives no issue (min 0, and so for every slice)
    one_ok: bool  # one value meets the cardinality, and there are no slices: only the value is checked
    inert: bool  # one_ok, and a single value of the element's type has nothing to check (ValuePlan.trivial)
    # A Reference whose only check is targetProfile, without slices: references that resolve to nothing
    # (the usual case outside a Bundle), as many as the cardinality allows, have nothing to check
    # (_type_profiles would do nothing on them).
    targets_only: bool
    # inert, and a resource is as good as any other value here (the type is Resource, DomainResource or
    # *: _type_allowed takes any type code): a Bundle entry's or a parameter's resource is not visited.
    any_resource: bool


@dataclass(slots=True, frozen=True)
class ValuePlan:
    """What is checked on each value of one element, beyond its type."""
    typed: bool  # the element lists types (a value of another type is refused)
    binding: Binding | None  # required or extensible, with a value set
    binding_quantity: Binding | None  # the binding a Quantity of a choice is held to (extensible)
    ranges: bool  # minValue, maxValue or maxLength
    constraints: tuple[Constraint, ...]  # the profile's own, not the core's
    type_profiles: bool  # non-core profiles or target profiles on some type
    fixed: Matcher | None  # json_equal(value, fixed[x]), compiled
    pattern: Matcher | None  # matches_pattern(value, pattern[x]), compiled
    # Nothing beyond the type: no fixed, pattern, range, binding, children, constraints, type profiles.
    trivial: bool


COMPLEX_BY_CODE: Final[dict[str, bool]] = {}


def is_complex(code: str) -> bool:
    """Is a value of this type code a JSON object (complex types, resources; "" when unknown)?"""
    hit = COMPLEX_BY_CODE.get(code)
    if hit is None:
        hit = COMPLEX_BY_CODE[code] = code[:1].isupper() or code == ""
    return hit


def own_constraints(pv: ProfileValidator, elem: ElementDef) -> tuple[Constraint, ...]:
    own = elem.own_constraints
    if own is None:
        own = elem.own_constraints = tuple(
            c for c in elem.constraints
            if c.key not in NATIVE_CONSTRAINTS and c.expression and not pv.is_core(c.source)
        ) if pv.check_invariants else ()
    return own


TypeProfiles = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


def type_profile_plan(pv: ProfileValidator, elem: ElementDef) -> TypeProfiles:
    """Per type: (code, profiles, target profiles) without the core ones, for the types that have any."""
    plan = elem.type_profiles
    if plan is None:
        every = [(t.code, tuple(p for p in t.profiles if not pv.is_core(p)),
                  tuple(p for p in t.target_profiles if not pv.is_core(p))) for t in elem.types]
        plan = elem.type_profiles = tuple(x for x in every if x[1] or x[2])
    return plan


def _empty_ok(elem: ElementDef) -> bool:
    """Does a group without values pass (``_group([])``: cardinality of it and of its slices)?"""
    return elem.min <= 0 and all(_empty_ok(s) for s in elem.slices)


def steps_of(pv: ProfileValidator, elem: ElementDef) -> tuple[Step, ...]:
    steps = elem.steps
    if steps is None:
        out = []
        for child in elem.children:
            if not child.relevant:
                continue
            if child.count_only is None:
                child.count_only = pv._is_count_only(child)
            if child.count_only:
                mode = COUNT
            elif child.choice:
                mode = CHOICE
            else:
                mode = PLAIN
            code = child.types[0].code if child.types else ""
            one_ok = not child.slices and child.min <= 1 and (child.max < 0 or child.max >= 1)
            inert = one_ok and mode == PLAIN and code in child.type_set and value_plan_of(pv, child).trivial
            targets_only = (mode == PLAIN and not child.slices and child.slicing is None and code == "Reference"
                            and code in child.type_set and _targets_only(pv, child))
            any_resource = inert and any(t.code in ("Resource", "DomainResource", "*") for t in child.types)
            out.append(Step(child, mode, child.name, "_" + child.name, code, _empty_ok(child), one_ok, inert,
                            targets_only, any_resource))
        steps = elem.steps = tuple(out)
    return steps


def _targets_only(pv: ProfileValidator, elem: ElementDef) -> bool:
    """Is targetProfile all ``_item_checks`` checks on a Reference value of this element (no fixed,
    pattern, range, binding, children, constraints of its own, nor profiles on the Reference itself)?"""
    plan = value_plan_of(pv, elem)
    return (plan.type_profiles and plan.fixed is None and plan.pattern is None and not plan.ranges
            and plan.binding is None and not plan.constraints and not elem.children
            and all(not profiles for _, profiles, _ in type_profile_plan(pv, elem)))


def value_plan_of(pv: ProfileValidator, elem: ElementDef) -> ValuePlan:
    plan: ValuePlan | None = elem.value_plan
    if plan is None:
        b = elem.binding
        binding = b if b is not None and b.value_set and b.strength in ("required", "extensible") else None
        quantity = None
        if binding is not None and binding.strength == "required" and len(elem.types) > 1:
            # A required binding on a choice of many types (vitalsigns component.value[x]) holds the
            # units of a Quantity as extensible, as the HL7 reference validator does (validator cases
            # obs-percent: warning; bb-obs-value-is-not-in-valueset, Quantity only: error).
            quantity = Binding("extensible", binding.value_set)
        ranges = elem.min_value is not None or elem.max_value is not None or elem.max_length is not None
        constraints = own_constraints(pv, elem)
        type_profiles = elem.has_type_profiles and bool(type_profile_plan(pv, elem))
        trivial = (elem.fixed is None and elem.pattern is None and not ranges and binding is None
                   and not elem.children and not constraints and not type_profiles)
        plan = elem.value_plan = ValuePlan(
            typed=bool(elem.types), binding=binding, binding_quantity=quantity, ranges=ranges,
            constraints=constraints, type_profiles=type_profiles,
            fixed=compile_fixed(elem.fixed[1]) if elem.fixed is not None else None,
            pattern=compile_pattern(elem.pattern[1]) if elem.pattern is not None else None, trivial=trivial)
    return plan


def is_count_only(pv: ProfileValidator, elem: ElementDef) -> bool:
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
    return not own_constraints(pv, elem)
