"""The compiled FHIRPath subset against the full engine on the consult IG's own constraints.

The core-invariant oracle (test_validation_invariants) sees no profile: the consult profiles add
Bundle-level constraints with ``resolve()``, ``descendants().ofType()``, ``iif``, ``%resource``
paths and nested ``where``/``all``. Here every constraint the validator evaluates while validating
each consult example (valid and invalid, so both verdicts occur) is evaluated by both engines, with
the same ``%resource``, ``%rootResource`` and resolver; wherever the subset answers, it must agree.
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.fhir.fhirpath.compiled import Unsupported, compile_fast
from fhir_exchange.validation import Validator
from fhir_exchange.validation.invariants import CORRECTIONS, InvariantChecker
from fhir_exchange.validation.schema import Constraint

ROOT = Path(__file__).resolve().parents[2]
KRCORE_TGZ = ROOT / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"


@cache
def consult_validator(tmp: Path) -> Validator:
    folder = tmp / "profiles"
    # A copy: the package loader writes an index into the folder it loads.
    shutil.copytree(ROOT / "profiles", folder, ignore=shutil.ignore_patterns("fsh", ".*"))
    return Validator(Definitions.load([folder, KRCORE_TGZ]))


def examples() -> list[dict[str, Any]]:
    out = []
    for sub in ("valid", "bundles", "invalid"):
        for f in sorted((ROOT / "examples" / sub).glob("*.json")):
            if f.name != "manifest.json":
                out.append(json.loads(f.read_bytes()))
    return out


@pytest.mark.skipif(not KRCORE_TGZ.exists(), reason="KR Core package not available")
def test_fast_subset_agrees_on_consult_constraints(tmp_path_factory: pytest.TempPathFactory) -> None:
    v = consult_validator(tmp_path_factory.mktemp("ig"))
    checker: InvariantChecker = v.invariants
    engine = checker.full_engine()
    seen: dict[str, list[bool]] = {}
    disagreements: list[tuple[str, str, bool, bool]] = []

    def observe(constraints: tuple[Constraint, ...], node: Any, path: str, type_path: str,
                resource: dict[str, Any], root: dict[str, Any], resolve: Any = None) -> None:
        # The environment check() builds: one per node, shared by its constraints (and the
        # per-environment results of ``%resource...`` paths with them).
        env: dict[str, Any] = {"resource": [resource], "rootResource": [root], "context": [node]}
        if resolve is not None:
            env["%resolve"] = resolve
        env["%typed_descendants"] = checker.typed_descendants_or_unsupported
        for c in constraints:
            if not c.expression or not c.source or "fhir-exchange.org" not in c.source:
                continue
            expr = CORRECTIONS.get(c.expression, c.expression)
            fast = checker._fast_fn(expr)
            try:
                result = fast([node], env)
            except (Unsupported, TypeError):  # _FAST_FAILED is not callable: not in the subset
                continue
            ours = not (len(result) == 1 and result[0] is False)
            theirs = engine.holds(engine.evaluate(expr, node, type_path, resource, root, resolve))
            seen.setdefault(c.key, []).append(ours)
            if ours != theirs:
                disagreements.append((c.key, path, ours, theirs))

    checker.observer = observe
    try:
        for res in examples():
            v.validate(res)
    finally:
        checker.observer = None
    assert not disagreements
    # The subset must have answered for the Bundle-level constraints (resolve(), descendants()),
    # with both verdicts occurring across valid and invalid examples.
    assert len(seen) >= 30, sorted(seen)
    assert any(k.startswith("cx-bdl") for k in seen), sorted(seen)
    assert any(not ok for oks in seen.values() for ok in oks)


@pytest.mark.parametrize(("expr", "node", "expected"), [
    ("x = 'a'", {"x": "a"}, [True]),
    ("x != 'a'", {"x": "a"}, [False]),
    ("x = 'a'", {"x": ["a", "a"]}, [False]),
    ("x = 'a'", {}, []),
    ("x = '1'", {"x": 1}, [False]),
    ("x = 'a' and y = 'b'", {"x": "a"}, []),
    ("x = 'a' xor y = 'b'", {"x": "a", "y": "b"}, [False]),
    ("x = 'a' implies y.exists()", {"x": "b"}, [True]),
])
def test_subset_operators(expr: str, node: dict[str, Any], expected: list[Any]) -> None:
    assert compile_fast(expr)([node], {}) == expected


def test_environment_paths_are_per_environment() -> None:
    # ``%resource.entry.fullUrl`` is computed once per environment: a new one sees its own resource.
    fn = compile_fast("x.all($this in %resource.entry.fullUrl)")
    node = {"x": ["a", "b"]}
    assert fn([node], {"resource": [{"entry": [{"fullUrl": "a"}, {"fullUrl": "b"}]}]}) == [True]
    assert fn([node], {"resource": [{"entry": [{"fullUrl": "a"}]}]}) == [False]
    assert compile_fast("%resource.valueQuantity.value")([{}], {"resource": [{"valueQuantity": {"value": 2}}]}) == [2]
    assert compile_fast("%resource.value.ofType(Quantity).value")(
        [{}], {"resource": [{"valueQuantity": {"value": 3}}]}) == [3]


def test_literal_unions_fold_and_focus_free_parts_are_shared() -> None:
    fn = compile_fast("code.intersect('a' | 'b' | 'a').count()")
    assert fn([{"code": ["a", "c", "b"]}], {}) == [2]
    # A focus-free argument (%resource...) inside a per-item criterion: computed once per environment,
    # yet each item is still tested against it.
    fn = compile_fast("x.where(%resource.ids contains $this).count()")
    assert fn([{"x": ["a", "b", "c"]}], {"resource": [{"ids": ["a", "c"]}]}) == [2]
    assert fn([{"x": ["a", "b", "c"]}], {"resource": [{"ids": ["b"]}]}) == [1]
    # Membership of a date-like string still follows FHIRPath date equality (the full engine decides).
    with pytest.raises(Unsupported):
        compile_fast("d in %resource.dates")([{"d": "2020"}], {"resource": [{"dates": ["2020-01"]}]})
    assert compile_fast("s in %resource.vals")([{"s": "1"}], {"resource": [{"vals": [1, True, {"a": 1}]}]}) == [False]
