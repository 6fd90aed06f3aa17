"""Invariants (https://hl7.org/fhir/R4/conformance-rules.html#constraints) and the compiled FHIRPath subset.

Oracle: on every invariant site of a corpus of resources (FHIRPath suite inputs, validator-case
resources and generated ones), the compiled subset must give the same verdict as the project's full
FHIRPath engine whenever it gives one at all.
"""

from __future__ import annotations

import contextlib
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast
from fhir_exchange.validation import Validator
from fhir_exchange.validation.invariants import CORRECTIONS, InvariantChecker
from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.schema import Constraint
from fhir_exchange.validation.structure import WalkContext

SUITES = Path(__file__).resolve().parents[1] / "data"  # fhirpath-r4/ and validator-r4/ (tests/data/README.md)


@lru_cache(maxsize=1)
def validator() -> Validator:
    return Validator(Definitions.load())


def corpus() -> list[dict[str, Any]]:
    out = []
    for f in sorted(SUITES.glob("**/*.json")):
        if f.name == "manifest.json":
            continue
        try:
            res = json.loads(f.read_bytes())
        except ValueError:
            continue
        if isinstance(res, dict) and validator().definitions.is_resource_type(str(res.get("resourceType"))):
            out.append(res)
    return out


def _sites(resources: list[dict[str, Any]]) -> list[tuple[Constraint, Any, str, Any, Any]]:
    v = validator()
    sites = []
    for res in resources:
        ctx = WalkContext(IssueSink())
        v.structure.validate_resource(res, "", ctx)
        for site in ctx.invariants:
            type_path = site.elem_path if site.type_code in ("BackboneElement", "Element") else site.type_code
            for c in site.extra:
                sites.append((c, site.node, type_path, site.resource, res))
    return sites


def test_fast_subset_agrees_with_full_engine() -> None:
    checker = validator().invariants
    engine = checker.full_engine()
    compared = 0
    for c, node, type_path, resource, root in _sites(corpus()):
        expr = CORRECTIONS.get(c.expression or "", c.expression or "")
        try:
            fast = compile_fast(expr)
            result = fast([node], {"resource": [resource], "rootResource": [root], "context": [node]})
        except Unsupported:
            continue
        ours = not (len(result) == 1 and result[0] is False)
        theirs = engine.holds(engine.evaluate(expr, node, type_path, resource, root))
        assert ours == theirs, (c.key, expr, node)
        compared += 1
    assert compared > 500


def test_subset_compiles_most_core_invariants() -> None:
    exprs = set()
    for sd in validator().definitions.iter("StructureDefinition"):
        if sd.get("derivation") == "specialization":
            for e in sd["snapshot"]["element"]:
                exprs.update(c["expression"] for c in e.get("constraint", ()) if c.get("expression"))
    compiled = 0
    for x in exprs:
        try:
            compile_fast(x)
            compiled += 1
        except Unsupported:
            pass
    assert compiled / len(exprs) > 0.9


@pytest.mark.parametrize(("expr", "node", "expected"), [
    ("a.exists() implies b.exists()", {"a": 1}, [False]),
    ("a.exists() implies b.exists()", {}, [True]),
    ("a or b", {"a": False}, []),
    ("a and b", {"a": False}, [False]),
    ("x.count() > 1", {"x": [1, 2]}, [True]),
    ("x.where($this > 1).count()", {"x": [1, 2, 3]}, [2]),
    ("x.all($this > 0)", {"x": [1, 2]}, [True]),
    ("value.exists()", {"valueQuantity": {"value": 1}}, [True]),
    ("start <= end", {"start": "2020-01-01T00:00:00Z", "end": "2020-01-01T09:00:00+09:00"}, [True]),
    ("low <= high", {"low": {"value": 1, "system": "http://unitsofmeasure.org", "code": "kg"},
                     "high": {"value": 500, "system": "http://unitsofmeasure.org", "code": "g"}}, [False]),
    ("low <= high", {"low": {"value": 1, "code": "a"}, "high": {"value": 5, "code": "b"}}, []),
    ("name.matches('^[A-Z]')", {"name": "Abc"}, [True]),
    ("(a | b).count()", {"a": 1, "b": 1}, [1]),
    ("s.startsWith('#').not()", {"s": "#x"}, [False]),
])
def test_subset_semantics(expr: str, node: dict[str, Any], expected: list[Any]) -> None:
    assert compile_fast(expr)([node], {}) == expected


def test_subset_refuses_what_it_cannot_do() -> None:
    for expr in ("x is Quantity", "x.ofType(Reference)", "x < @2020", "$index", "%unknown"):
        with pytest.raises(Unsupported):
            compile_fast(expr)
    with pytest.raises(Unsupported):  # memberOf() needs the caller's terminology
        compile_fast("x.memberOf('http://a')")([{"x": "a"}], {})
    assert compile_fast("%`vs-x`")([{}], {}) == ["http://hl7.org/fhir/ValueSet/x"]  # folded by the engine
    with pytest.raises(Unsupported):  # resolve() needs the caller's resolver
        compile_fast("x.resolve()")([{"x": {"reference": "Patient/1"}}], {})
    assert compile_fast("value.ofType(Quantity).value")([{"valueQuantity": {"value": 1}}], {}) == [1]
    assert compile_fast("entry.resource.ofType(Patient).id")(
        [{"entry": [{"resource": {"resourceType": "Patient", "id": "a"}},
                    {"resource": {"resourceType": "Group", "id": "b"}}]}], {}) == ["a"]
    with pytest.raises(Unsupported):  # different precisions: the full engine knows the FHIRPath rules
        compile_fast("a < b")([{"a": "2020", "b": "2020-01-01"}], {})


def test_core_invariant_failure_is_reported_with_its_severity() -> None:
    res = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"},
           "prediction": [{"probabilityDecimal": 101}]}
    found = [(i.severity, i.diagnostics) for i in validator().validate(res) if i.message_id == "sd-invariant"]
    assert ("error", "Constraint failed: ras-2: Must be <= 100") in found  # needs the full engine (is/as)


def test_r4_errata_are_corrected() -> None:
    q = {"resourceType": "Questionnaire", "status": "draft", "item": [
        {"linkId": "a", "type": "integer"}, {"linkId": "b", "type": "integer"},
        {"linkId": "c", "type": "integer", "enableWhen": [
            {"question": "a", "operator": "exists", "answerBoolean": True},
            {"question": "b", "operator": "exists", "answerBoolean": True}]}]}
    keys = [i.diagnostics[:25] for i in validator().validate(q) if i.message_id == "sd-invariant"]
    assert "Constraint failed: que-12" in keys


def test_unevaluable_constraint_is_information() -> None:
    checker = InvariantChecker()
    sink = IssueSink()
    broken = Constraint("x-1", "error", "broken", "this is not fhirpath ((", None)
    checker.check((broken,), {"a": 1}, "Patient", "Patient", {}, {}, sink)
    assert [(i.severity, i.message_id) for i in sink.result()] == [("information", "sd-invariant-not-evaluated")]


def test_random_nodes_do_not_crash_the_subset() -> None:
    rng = random.Random(3)
    values: list[Any] = [None, 1, 2.5, "x", "2020-01-01", True, {"value": 1}, [1, "a"], {"a": {"b": [1]}}]
    for c, *_ in _sites(corpus())[:400]:
        try:
            fast = compile_fast(CORRECTIONS.get(c.expression or "", c.expression or ""))
        except Unsupported:
            continue
        node = {k: rng.choice(values) for k in ("a", "value", "start", "end", "code", "system", "reference")}
        with contextlib.suppress(Unsupported):  # refusing is fine; crashing is not
            fast([node], {"resource": [node], "rootResource": [node], "context": [node]})


ROOT = Path(__file__).resolve().parents[2]


def test_fast_subset_agrees_on_consult_constraints() -> None:
    """The consult IG's constraints (resolve() in Bundles, ofType on choices) on its examples."""
    from fhir_exchange.validation.references import Resolver

    sds = [json.loads(f.read_text()) for f in sorted((ROOT / "profiles").glob("StructureDefinition-*.json"))]
    if not sds:
        pytest.skip("no consult profiles")
    by_url = {sd["url"]: sd for sd in sds}
    engine = validator().invariants.full_engine()
    compared = 0
    for f in sorted((ROOT / "examples").glob("*/*.json")):
        res = json.loads(f.read_text())
        if not isinstance(res, dict) or "meta" not in res:
            continue
        ctx = WalkContext(IssueSink())
        validator().structure.validate_resource(res, "", ctx)
        resolver = Resolver(res, ctx.resources)
        resolve = resolver.resolver_for(res)
        for url in res["meta"].get("profile", []):
            for e in by_url.get(url, {}).get("differential", {}).get("element", []):
                if "." in e["path"]:
                    continue
                for c in e.get("constraint", []):
                    try:
                        result = compile_fast(c["expression"])(
                            [res], {"resource": [res], "rootResource": [res], "context": [res], "%resolve": resolve})
                    except Unsupported:
                        continue
                    ours = not (len(result) == 1 and result[0] is False)
                    theirs = engine.holds(engine.evaluate(c["expression"], res, res["resourceType"], res, res,
                                                          resolve))
                    assert ours == theirs, (f.name, c["key"])
                    compared += 1
    assert compared > 50


def test_skipping_guard_is_sound() -> None:
    """Where the checker skips a constraint (none of the names it reads is present), evaluating it holds."""
    from fhir_exchange.fhir.fhirpath.compiled import touches
    from fhir_exchange.validation.invariants import _guard

    skipped = 0
    for c, node, _type_path, resource, root in _sites(corpus()):
        expr = CORRECTIONS.get(c.expression or "", c.expression or "")
        try:
            fast = compile_fast(expr)
        except Unsupported:
            continue
        guard = _guard(fast)
        if guard is None or touches(node, guard):
            continue
        skipped += 1
        try:
            result = fast([node], {"resource": [resource], "rootResource": [root], "context": [node]})
        except Unsupported:
            continue
        assert not (len(result) == 1 and result[0] is False), (c.key, expr, node)
    assert skipped > 100
    assert _guard(compile_fast("a.exists()")) is None  # fails on nothing: never skipped
    assert _guard(compile_fast("$this.a.empty()")) is None  # reads the focus as a whole
    assert _guard(compile_fast("a.empty() or b.exists()")) == frozenset({"a", "b"})


def test_member_of_asks_the_terminology() -> None:
    from fhir_exchange.validation.invariants import member_of_terminology

    v = validator()
    checker = InvariantChecker(member_of=member_of_terminology(v.terminology))
    gender = Constraint("g-1", "error", "gender", "g.memberOf('http://hl7.org/fhir/ValueSet/administrative-gender')",
                        None)
    unknown = Constraint("u-1", "error", "unknown", "g.memberOf('http://example.org/ValueSet/nowhere')", None)

    def issues(c: Constraint, node: dict[str, Any]) -> list[tuple[str, str]]:
        sink = IssueSink()
        checker.check((c,), node, "Patient", "Patient", {}, {}, sink)
        return [(i.severity, i.message_id) for i in sink.result()]

    assert issues(gender, {"g": "male"}) == []
    assert issues(gender, {"g": "nonsense"}) == [("error", "sd-invariant")]
    assert issues(gender, {"g": {"coding": [{"system": "http://hl7.org/fhir/administrative-gender",
                                             "code": "female"}]}}) == []
    # An unknown value set is "not evaluated" (information), never a silent pass.
    assert issues(unknown, {"g": "male"}) == [("information", "sd-invariant-not-evaluated")]
    # The full evaluator asks the same terminology where the compiled back-end refuses (@2020 literal).
    mixed = Constraint("m-1", "error", "mixed", "d < @2020 or g.memberOf('http://hl7.org/fhir/ValueSet/"
                       "administrative-gender')", None)
    assert issues(mixed, {"g": "nonsense", "d": "2021"}) == [("error", "sd-invariant")]
    assert issues(mixed, {"g": "male", "d": "2021"}) == []


def test_resolve_finds_contained_and_bundle_resources() -> None:
    checker = InvariantChecker()
    c = Constraint("r-1", "error", "resolves to a Patient", "subject.resolve() is Patient", None)
    targets = {"#p": {"resourceType": "Patient", "id": "p"}, "#o": {"resourceType": "Organization", "id": "o"}}
    for ref, broken in (("#p", False), ("#o", True)):
        sink = IssueSink()
        checker.check((c,), {"subject": {"reference": ref}}, "Observation", "Observation", {}, {}, sink,
                      targets.get)
        assert bool(sink.result()) is broken
