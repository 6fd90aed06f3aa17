"""The profile walk decided once per element (validation/profile_compile.py, slicing.py) gives the
issues the plain per-value walk gives.

Three shortcuts are checked against their plain form on the consult IG's examples (valid and invalid),
a KR Core Patient and mutations of them (a top-level element dropped, a string changed, an array
doubled), so that cardinality, fixed, pattern, binding and slicing issues all occur:
- compiled ``fixed[x]``/``pattern[x]`` matchers against ``values.json_equal``/``matches_pattern``;
- the slice index (one lookup per discriminator) against trying each slice in turn;
- the per-element plan's shortcuts (absent child, single value, nothing to check, inert child,
  references with nothing to resolve, resources where any will do)
  against the walk without them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fhir_exchange.definitions import Definitions
from fhir_exchange.validation import Validator, profile_compile, slicing
from fhir_exchange.validation.profile_compile import compile_fixed, compile_pattern
from fhir_exchange.validation.schema import ElementDef
from fhir_exchange.validation.values import json_equal, matches_pattern
from tests.pure_python import rerun_as_python

ROOT = Path(__file__).resolve().parents[2]
KRCORE_TGZ = ROOT / "fhir_exchange" / "packages" / "hl7.fhir.kr.core-2.0.0.tgz"
KR_PATIENT = "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-patient"
ROAD = "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-roadNameAddress"

VALUES: list[Any] = ["a", "b", "", 1, 1.0, 0, 2, True, False, None, {}, [], ["a"], [["a"]], [1, 2], {"a": "a"},
                     {"a": ["a", "b"]}, {"a": 1}, {"a": True}, {"coding": [{"system": "s", "code": "c"}]},
                     {"coding": [{"system": "s", "code": "d"}, {"system": "s", "code": "c", "display": "x"}]}]
PATTERNS: list[Any] = [*VALUES, [{"a": "a"}], {"a": ["a"]}, {"coding": [{"system": "s"}, {"code": "c"}]}]


def test_compiled_matchers_agree_with_the_value_rules() -> None:
    for p in PATTERNS:
        pattern, fixed = compile_pattern(p), compile_fixed(p)
        for v in VALUES:
            assert pattern(v) == matches_pattern(v, p), (v, p)
            assert fixed(v) == json_equal(v, p), (v, p)


def kr_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": "p", "meta": {"profile": [KR_PATIENT]},
        "identifier": [{"system": "http://hospital.example.kr/mrn", "value": "1"}],
        "name": [{"text": "김민수"}], "gender": "male", "birthDate": "1948-03-02",
        "telecom": [{"system": "phone", "value": "010-1234-5678"}, {"system": "email", "value": "a@b.kr"},
                    {"system": "fax", "value": "02-123"}, {"system": "email"}],
        "address": [{"extension": [{"url": ROAD, "extension": [
            {"url": "district", "valueString": "종로구"}, {"url": "roadName", "valueString": "대학로"},
            {"url": "detailedAddress", "valueString": "101"}, {"url": "other", "valueString": "x"}]}],
            "text": "서울"}],
    }


def mutations(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = [res]
    for k, v in res.items():
        if k in ("resourceType", "meta"):
            continue
        dropped = {kk: vv for kk, vv in res.items() if kk != k}
        out.append(dropped)
        if isinstance(v, str):
            out.append({**res, k: v + "x"})
        if isinstance(v, list) and v:
            out.append({**res, k: v + copy.deepcopy(v)})
        if isinstance(v, dict):
            out.append({**res, k: {kk: (vv + "x" if isinstance(vv, str) else vv) for kk, vv in v.items()}})
    return out


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    out = [kr_patient()]
    for sub in ("valid", "bundles", "invalid"):
        for f in sorted((ROOT / "examples" / sub).glob("*.json")):
            res = json.loads(f.read_bytes())
            if isinstance(res, dict) and res.get("resourceType") and f.name != "manifest.json":
                out.append(res)
    return [m for r in out for m in mutations(r)]


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory) -> Definitions:
    folder = tmp_path_factory.mktemp("ig") / "profiles"
    # A copy: the package loader writes an index into the folder it loads.
    shutil.copytree(ROOT / "profiles", folder, ignore=shutil.ignore_patterns("fsh", ".*"))
    return Definitions.load([folder, KRCORE_TGZ])


def issues(defs: Definitions, resources: list[dict[str, Any]]) -> list[list[tuple[Any, ...]]]:
    v = Validator(defs)  # fresh: the plans are built by the walk under test
    return [[(i.severity, i.code, i.message_id, i.diagnostics, i.expression) for i in v.validate(r)]
            for r in resources]


def test_the_shortcuts_give_the_issues_of_the_plain_walk(definitions: Definitions, resources: list[dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         request: pytest.FixtureRequest) -> None:
    if rerun_as_python(request):  # the plain walk replaces functions that compiled code calls directly
        return
    lookups: list[int] = []
    lookup = slicing._lookup

    def counted(*args: Any) -> int:
        lookups.append(1)
        return lookup(*args)

    monkeypatch.setattr(slicing, "_lookup", counted)
    compiled = issues(definitions, resources)
    assert lookups  # slices were found through the index
    assert any(compiled) and not all(compiled)  # both verdicts occur
    found = {d for per in compiled for _, _, _, d, _ in per}
    assert any("minimum required" in d for d in found)
    assert any("matches no slice" in d or "max allowed" in d for d in found)

    steps_of, value_plan_of = profile_compile.steps_of, profile_compile.value_plan_of

    def plain_steps(pv: Any, elem: ElementDef) -> tuple[profile_compile.Step, ...]:
        elem.steps = tuple(dataclasses.replace(s, empty_ok=False, one_ok=False, inert=False, targets_only=False,
                                                   any_resource=False)
                           for s in steps_of(pv, elem))
        return elem.steps

    def plain_plan(pv: Any, elem: ElementDef) -> profile_compile.ValuePlan:
        elem.value_plan = dataclasses.replace(value_plan_of(pv, elem), trivial=False)
        plan: profile_compile.ValuePlan = elem.value_plan
        return plan

    monkeypatch.setattr("fhir_exchange.validation.profile.steps_of", plain_steps)
    monkeypatch.setattr("fhir_exchange.validation.profile.value_plan_of", plain_plan)
    monkeypatch.setattr(slicing, "_index", lambda *args: None)  # every slice tried in turn
    before = len(lookups)
    plain = issues(definitions, resources)
    assert len(lookups) == before  # no index used in the plain walk
    assert compiled == plain
