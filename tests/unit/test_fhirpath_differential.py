"""The two back-ends of the FHIRPath engine agree: compiled (fhir/fhirpath/compiled.py) and full.

Oracle: the full evaluator (934/935 of the official suite). For every core invariant (the
constraints of the R4 core package's StructureDefinitions) on every element of the example
resources the tests carry (tests/data: FHIRPath suite inputs and validator cases; examples/: the
consult IG's examples) that it applies to, and for every core SearchParameter expression on every
example of its base types, the compiled back-end gives the same result as the full evaluator
wherever it compiles (it may refuse, by raising Unsupported; then callers use the full evaluator).

The default run takes a deterministic subset (at most a few sites per expression, so every
expression is still exercised); ``-m slow`` sweeps every site.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.fhir import fhirpath
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast
from fhir_exchange.fhir.fhirpath.compiled_typed import compile_typed, search_environment
from tests.unit.test_fhirpath import _core_definitions as core_definitions

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIRS = (ROOT / "tests" / "data", ROOT / "examples")
DEFAULT_SITES_PER_EXPRESSION = 12


@cache
def core_invariants() -> dict[str, set[str]]:
    """{element path or type: {expression}} over every core StructureDefinition."""
    out: dict[str, set[str]] = defaultdict(set)
    for sd in core_definitions()[0]:
        for element in sd.get("snapshot", {}).get("element", []):
            for c in element.get("constraint", []):
                if c.get("expression"):
                    out[element["path"]].add(c["expression"])
    return out


@cache
def corpus() -> list[dict[str, Any]]:
    from fhirpathpy.models import models

    types = models["r4"]["type2Parent"]
    out = []
    for folder in CORPUS_DIRS:
        for f in sorted(folder.glob("**/*.json")):
            try:
                res = json.loads(f.read_bytes())
            except ValueError:
                continue
            if isinstance(res, dict) and res.get("resourceType") in types:
                out.append(res)
    return out


Site = tuple[Any, str, dict[str, Any], dict[str, Any]]  # node, type path, %resource, %rootResource


def _walk(node: Any, path: str, type_path: str, resource: dict[str, Any], root: dict[str, Any],
          out: list[tuple[Site, str]]) -> None:
    """Every element with its element path, FHIR type (or backbone path), resource and root."""
    from fhirpathpy.models import models

    path2type = models["r4"]["path2Type"]
    elsewhere = models["r4"]["pathsDefinedElsewhere"]
    out.append(((node, type_path, resource, root), path))
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key.startswith("_") or key == "resourceType":
            continue
        child_path = elsewhere.get(f"{type_path}.{key}", f"{type_path}.{key}")
        child_type = path2type.get(child_path) or child_path
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "resourceType" in item:
                rt = item["resourceType"]
                # %rootResource is the container of a contained resource, else the resource itself.
                _walk(item, rt, rt, item, root if key == "contained" else item, out)
            elif item is not None:
                _walk(item, f"{path}.{key}", child_type, resource, root, out)


def invariant_sites() -> dict[str, list[Site]]:
    """{expression: [site]} for every core invariant that applies to an element of the corpus."""
    constraints = core_invariants()
    out: dict[str, list[Site]] = defaultdict(list)
    for res in corpus():
        elements: list[tuple[Site, str]] = []
        _walk(res, res["resourceType"], res["resourceType"], res, res, elements)
        for site, path in elements:
            type_path = site[1]
            for expression in constraints.get(path, set()) | constraints.get(type_path, set()):
                out[expression].append(site)
    return out


def _plain(values: list[Any]) -> list[Any]:
    """Results of both back-ends in one form: numbers as Decimal, JSON as JSON."""
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append(v)
        elif isinstance(v, (int, float, Decimal)):
            out.append(Decimal(str(v)).normalize())
        else:
            out.append(v)
    return out


def compare_invariants(limit: int | None) -> tuple[int, int, list[str]]:
    compared = refused = 0
    mismatches = []
    for expression, sites in sorted(invariant_sites().items()):
        try:
            fast = compile_fast(expression)
        except Unsupported:
            refused += 1
            continue
        full = fhirpath.compile(expression)
        for node, type_path, resource, root in sites[:limit]:
            env = {"resource": [resource], "rootResource": [root], "context": [node]}
            try:
                ours = fast([node], env)
            except Unsupported:
                continue
            truth = getattr(fast, "truth", None)
            if truth is not None:  # what the invariant checker asks instead of the collection
                verdict = truth([node], {"resource": [resource], "rootResource": [root], "context": [node]})
                if ours != ([] if verdict is None else [verdict]):
                    mismatches.append(f"{expression!r} on {type_path}: truth {verdict!r}, collection {ours!r}")
            theirs = full.evaluate(resource, node, root_resource=root, context_path=type_path)
            compared += 1
            if _plain(ours) != _plain(theirs):
                mismatches.append(f"{expression!r} on {type_path} {json.dumps(node)[:200]}: "
                                  f"compiled {ours!r}, full {theirs!r}")
    return compared, refused, mismatches


def test_compiled_and_full_agree_on_core_invariants_subset() -> None:
    compared, refused, mismatches = compare_invariants(DEFAULT_SITES_PER_EXPRESSION)
    assert not mismatches, "\n".join(mismatches[:20])
    assert compared > 1000
    assert refused < 40  # nearly every core invariant compiles


@pytest.mark.slow
def test_compiled_and_full_agree_on_core_invariants_everywhere() -> None:
    compared, _, mismatches = compare_invariants(None)
    assert not mismatches, "\n".join(mismatches[:20])
    assert compared > 10_000


def core_search_expressions() -> Iterator[tuple[str, str, list[str]]]:
    for sp in core_definitions()[1]:
        if sp.get("expression"):
            yield sp["id"], sp["expression"], sp["base"]


@cache
def corpus_by_type() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for res in corpus():
        out[res["resourceType"]].append(res)
    return out


def _resources_of(bases: list[str]) -> list[dict[str, Any]]:
    if {"Resource", "DomainResource"} & set(bases):
        return corpus()
    return [r for b in bases for r in corpus_by_type().get(b, [])]


def _same_type(ours: str, theirs: str | None) -> bool:
    return theirs is not None and theirs.lower() in (f"fhir.{ours.lower()}", f"system.{ours.lower()}")


def compare_search(limit: int | None) -> tuple[int, int, list[str]]:
    """Values of the whole expression, and the types the search back-end gives its items."""
    compared = refused = 0
    mismatches: list[str] = []
    for sp_id, expression, bases in core_search_expressions():
        try:
            fast = compile_fast(expression)
            typed = {b: compile_typed(expression, b) for b in bases}
        except Unsupported:
            refused += 1
            continue
        full = fhirpath.compile(expression)
        for res in _resources_of(bases)[:limit]:
            env = search_environment(res)
            try:
                ours = fast([res], env)
                ours_typed = typed.get(res["resourceType"]) or compile_typed(expression, res["resourceType"])
                items = [] if ours_typed is None else ours_typed([res], env)
            except Unsupported:
                continue
            try:
                theirs = full.evaluate_typed(res)
            except fhirpath.FhirPathError:
                # ``(Observation.component.value as Quantity)`` over two components: an error to
                # the full evaluator (the operator wants one item), a filter to the search back-end.
                continue
            compared += 1
            if _plain(ours) != _plain([t.value for t in theirs]):
                mismatches.append(f"{sp_id} {expression!r} on {res['resourceType']}/{res.get('id')}: "
                                  f"compiled {ours!r:.300}, full {[t.value for t in theirs]!r:.300}")
                continue
            for value, t in items:
                if t is None:
                    continue
                match = [x.type for x in theirs if _plain([x.value]) == _plain([value])]
                if match and not any(_same_type(t, m) for m in match):
                    mismatches.append(f"{sp_id} {expression!r}: type {t} of {value!r:.100}, full {match}")
    return compared, refused, mismatches


def test_compiled_and_full_agree_on_core_search_parameters_subset() -> None:
    compared, refused, mismatches = compare_search(DEFAULT_SITES_PER_EXPRESSION)
    assert not mismatches, "\n".join(mismatches[:20])
    assert compared > 1000
    assert refused < 10  # nearly every core SearchParameter expression compiles


@pytest.mark.slow
def test_compiled_and_full_agree_on_core_search_parameters_everywhere() -> None:
    compared, _, mismatches = compare_search(None)
    assert not mismatches, "\n".join(mismatches[:20])
    assert compared > 5_000


def test_search_items_are_typed_where_the_json_or_the_expression_tells() -> None:
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1, "unit": "kg"},
           "effectivePeriod": {"start": "2020"}, "subject": {"reference": "Patient/1"},
           "component": [{"valueQuantity": {"value": 2}}, {"valueString": "x"}],
           "extension": [{"url": "http://e", "valueCode": "c"}, {"url": "http://f", "valueString": "s"}]}
    env = search_environment(obs)

    def items(expression: str) -> list[tuple[Any, str | None]]:
        fn = compile_typed(expression, "Observation")
        assert fn is not None
        return fn([obs], env)

    assert items("Observation.value") == [({"value": 1, "unit": "kg"}, "Quantity")]
    assert items("Observation.effective") == [({"start": "2020"}, "Period")]
    assert items("(Observation.component.value as Quantity)") == [({"value": 2}, "Quantity")]
    assert items("Observation.component.value.as(string)") == [("x", "String")]
    assert items("Observation.extension('http://e')") == [("c", "Code")]
    assert items("Observation.subject.where(resolve() is Patient)") == [({"reference": "Patient/1"}, None)]
    assert items("Observation.subject.where(resolve() is Group)") == []
    # Alternatives of other resource types are dropped when compiling, not filtered per resource.
    assert compile_typed("Patient.name | Person.name", "Observation") is None
    assert items("Patient.name | Observation.status | Observation.value") == [({"value": 1, "unit": "kg"},
                                                                                "Quantity")]


# Hand-made nodes for what the example corpus rarely shows: empty and many-valued operands of the
# boolean operators, primitives with only extensions, dates of every precision and offset.
_EXPRESSIONS = [
    "a.exists() and b.exists()", "a.exists() or b = 'x'", "a implies b", "a xor b", "a.not()",
    "b.exists(startsWith('x'))", "c.all(d = 1)", "c.where(d = 1).count() = 1", "c.d != 2",
    "b.startsWith('x').not() or b.matches('^x[0-9]+$')", "b.endsWith('1') and b.contains('x')",
    "c.d.first() = 1", "b ~ 'X1'", "b in ('x1' | 'y')", "('x1' | 'y') contains b",
    "e.f.g.exists()", "e.f.g.empty()", "e.f.g = 'v'", "b.intersect('x1' | 'z').empty()",
    "b.exclude('x1' | 'z').exists()", "start <= end", "start > end", "start = end",
    "start.exists() implies start >= end",
    "iif(a, 'y', 'n') = 'y'", "c.count() = 2", "c.d.count() != 1",
    # chains of or/and in one loop; `not` fused with exists/empty, string predicates, hasValue
    "a or b.exists() or c.exists()", "a and b.exists() and c.exists()", "(a or a.not()) or b = 'x1'",
    "a.not() and b.exists() and (c.exists() or e.exists())", "a or b or c.d = 1 or e.f.g = 'v'",
    "b.exists().not()", "b.empty().not()", "e.f.g.exists().not()", "b.startsWith('x').not()",
    "b.contains('1').not()", "b.matches('y').not()", "b.exists().not().not()",
    "start.hasValue()", "b.hasValue().not()", "c.hasValue()", "e.hasValue() or b.hasValue()",
    "start.hasValue().not() or end.hasValue().not() or (start <= end)",
    "start.exists().not() or end.exists().not() or start >= end",
    # a literal against one key of the focus; equality of booleans and of single items
    "b = 'x1'", "b != 'x1'", "c.where(d = 1).exists()", "c.where(d != 1 and d = 2).exists()",
    "a.exists() = b.exists()", "a.exists() != (b = 'x1' or b = 'y')", "b.exists() = a",
    "c.all(d.exists() = (%resource.a = true or %resource.b = 'x1'))", "c.d = e.f.g", "b = b",
    # the last step of a chain tested without its collection; a choice name on a plain key
    "c.d.empty()", "e.f.exists()", "c.d.exists() or a", "e.f.g.exists() = c.d.exists()",
    "value.empty() or system.exists()", "value.exists()",
    # literal tests of keys fused in one call; first() of a key; where().exists() without a list
    "b = 'x1' and b != 'y'", "b = 'x1' and a.exists() and b != 'y'", "c.where(d = 1 and d != 2).exists()",
    "c.where(d = 1 and e = 'x').empty()", "c.first().d = 1", "c.first().exists()", "c.where(d = 1).exists().not()",
    # string functions of the focus itself (criteria over strings)
    "b.where(startsWith('x').not()).exists()", "b.all(startsWith('x') or matches('^y'))",
    "b.select(endsWith('1'))", "b.where($this.contains('1')).count() = 1", "e.f.g.all(startsWith('v'))",
    # resource types of contained items; is() as a boolean
    "r.ofType(Patient).count() = 1", "r.first().is(Patient) implies a",
    "r.is(Patient)", "(r.first() is Bundle).not()",
]
_NODES: list[dict[str, Any]] = [
    {}, {"a": True}, {"a": False, "b": "x1"}, {"b": ["x1", "y"]}, {"_b": {"extension": []}},
    {"a": True, "b": "y"}, {"c": [{"d": 1}, {"d": 2}]}, {"c": [{"d": 1}]}, {"c": {"d": 1.0}},
    {"e": {"f": [{"g": "v"}, {"_g": {"id": "1"}}]}}, {"e": [{"f": {"g": ["v", None, "w"]}}]},
    {"start": "2020-01-02", "end": "2020-01-02"}, {"start": "2020-01-01", "end": "2020-01-02"},
    {"start": "2020-02-30", "end": "2020-01-02"}, {"start": "2020-01", "end": "2020-01-02"},
    {"start": "2020-01-02T10:00:00+09:00", "end": "2020-01-02T01:00:00Z"},
    {"start": "2020-01-02T10:00:00.5+09:00", "end": "2020-01-02T01:00:00Z"},
    {"start": "2020-01-02T10:00:00.123456789Z", "end": "2020-01-02T10:00:00.1234561Z"},
    {"start": "2020-01-02T10:00:00Z", "end": "2020-01-02T10:00Z"},
    {"start": "2020-01-02T10:00:00", "end": "2020-01-02T10:00:00Z"},
    {"start": "0001-01-01T00:30:00+01:00", "end": "0001-01-01T00:00:00Z"}, {"start": 3, "end": 2.5},
    # nulls and JSON of the wrong type; choice names; one date in several layouts
    {"b": None, "_b": {"id": "x"}}, {"a": "true", "b": 5}, {"c": [None, {"d": 1}]}, {"e": {"f": None}},
    {"c": [{"d": [1, 2]}, {"_d": {"id": "1"}}]}, {"c": {"d": 1}, "e": {"f": {"g": "x1"}}, "a": True, "b": "x1"},
    {"value": "123", "system": "phone"}, {"valueString": "x"}, {"value": ["a", "b"]}, {"_value": {"id": "v"}},
    {"start": "2020-01-02T10:00:00+09:00", "end": "2020-01-02T10:00:00+09:00"},
    {"start": "2020-01-02T10:00:00+09:00", "end": "2020-01-02"}, {"start": ["2020-01-01"], "end": "2020-01-02"},
    {"start": "2020-13-01", "end": "2020-01-02"}, {"start": "2020-01-02T25:00:00Z", "end": "2020-01-02T10:00:00Z"},
    {"start": {"value": "2020"}, "end": "2020"}, {"start": "2020-01-02", "_start": {"id": "s"}, "end": None},
    {"c": [None, {"d": 1, "e": "x"}, {"d": "1"}, {"d": [1]}, {}, {"d": 1, "e": ["x"]}, {"_d": {"id": "i"}}]},
    {"c": [None, None]}, {"c": [{"d": True}, {"d": 1.0, "e": "x"}]}, {"c": None, "_c": [None, {"id": "c"}]},
    {"r": {"resourceType": "Patient", "id": "p"}, "a": False}, {"r": [{"resourceType": "Bundle"}, {"id": "x"}]},
    {"r": [{"resourceType": "Patient"}, "Patient", {"resourceType": ["Patient"]}, None]},
]


def test_specialised_closures_agree_with_the_full_evaluator() -> None:
    """The shortcuts of the compiled back-end (truth without lists, path chains in one loop,
    literal comparisons, set lookups, full-precision dates) against the full evaluator."""
    compared = 0
    for expression in _EXPRESSIONS:
        fast = compile_fast(expression)
        full = fhirpath.compile(expression)
        truth = getattr(fast, "truth", None)
        for node in _NODES:
            env = {"resource": [node], "rootResource": [node], "context": [node]}
            # Dates are typed as the full evaluator types them: the elements of a Period.
            type_path = "Period" if "start" in node else None
            try:
                ours = fast([node], env)
            except Unsupported:
                continue
            except Exception:  # the full evaluator must then fail as well
                with pytest.raises(Exception):  # noqa: B017
                    full.evaluate(node, node, context_path=type_path)
                continue
            if truth is not None:
                verdict = truth([node], {"resource": [node], "rootResource": [node], "context": [node]})
                assert ours == ([] if verdict is None else [verdict]), (expression, node)
            try:
                theirs = full.evaluate(node, node, context_path=type_path)
            except Exception:  # an error there is no answer to compare with
                continue
            compared += 1
            assert _plain(ours) == _plain(list(theirs)), (expression, node, ours, theirs)
    assert compared > 400


def test_full_precision_dates_compare_as_temporal_values() -> None:
    import random

    from fhir_exchange.fhir.fhirpath.compiled_values import _compare_full_precision, _temporal
    from fhir_exchange.fhir.fhirpath.temporal import compare_temporal

    rng = random.Random(7)

    def value() -> str:
        s = f"{rng.choice([2, 1999, 2020, 2024])}-{rng.randint(0, 13):02d}-{rng.randint(0, 31):02d}"
        if rng.random() < 0.3:
            return s.rjust(10, "0")
        s = s.rjust(10, "0") + f"T{rng.randint(0, 24):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        if rng.random() < 0.5:
            s += "." + "".join(rng.choices("0123456789", k=rng.randint(1, 8)))
        return s + rng.choice(["Z", "+09:00", "-05:30", "+00:00"])
    fast = 0
    pairs = [("2020-01-02T10:00:00.1234567Z", "2020-01-02T10:00:00.1234568Z"),  # equal to the microsecond
             ("2020-01-02T10:00:00.123456Z", "2020-01-02T10:00:00.123457Z"),
             ("2020-01-02T10:00:00+09:00", "2020-01-02T01:00:00Z"),
             ("2020-01-02T10:00:00+00:00", "2020-01-02T10:00:00Z")]
    pairs += [(value(), value()) for _ in range(5000)]
    for i, (a, b) in enumerate(pairs):
        if i >= 4 and rng.random() < 0.3:  # the same layout, another second
            b = a[:18] + str((int(a[18]) + 1) % 10) + a[19:] if len(a) > 19 else a
        r = _compare_full_precision(a, b)
        if r is not None:
            ta, tb = _temporal(a), _temporal(b)
            assert ta is not None and tb is not None and compare_temporal(ta, tb) == r, (a, b, r)
            fast += 1
    assert fast > 1000


def test_a_repeated_chain_is_evaluated_once_per_focus() -> None:
    """sdf-9-style expressions repeat a chain; its result is kept for the focus it was computed on
    only: an environment reused for another focus gets that focus's answer."""
    expression = "children().where(b = 1).c.exists() and children().where(b = 1).d.exists()"
    fast = compile_fast(expression)
    nodes = [{"x": {"b": 1, "c": "y", "d": "z"}}, {"x": {"b": 1, "c": "y"}}, {"x": [{"b": 2, "c": 1, "d": 1}]}]
    env: dict[str, Any] = {"resource": [{}], "rootResource": [{}], "context": [{}]}
    reused = [fast([n], env) for n in nodes]
    fresh = [fast([n], {"resource": [{}], "rootResource": [{}], "context": [{}]}) for n in nodes]
    assert reused == fresh == [[True], [False], [False]]
    assert "%common" in env  # the chain was cached, and the cache did not leak across foci
